"""Feature probes: each one makes, for real, a syscall snapshotd depends on
(on this process or on a child it forks) and returns (ok, detail[, extra]).
/proc/config.gz is only quoted in details.  `snapshotd check` reports them
(check.py); the trackers probe what they need here (incremental/)."""
from __future__ import annotations

import ctypes
import gzip
import mmap
import os
import random
import re
import signal
import struct

from . import libc
from . import syscalls as sc


def _errno(what: str) -> str:
    e = ctypes.get_errno()
    return f"{what}: {os.strerror(e)} (errno {e})"


def _kconfig(name: str) -> str:
    """CONFIG_<name> from /proc/config.gz: 'y', 'm', 'not set' or 'unknown'."""
    try:
        m = re.search(rf"^CONFIG_{name}=(\S+)", gzip.open("/proc/config.gz", "rt").read(), re.M)
    except OSError:
        return "unknown"
    return m.group(1) if m else "not set"


def _addr(buf) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def _fork_bound(keep: tuple = ()) -> int:
    """fork(), the child bound to us: it dies with us (PR_SET_PDEATHSIG) and
    holds none of our files but keep (in the daemon: its socket, its sqlite
    registrations, the store lock), so a probe killed with the daemon leaves
    nothing behind."""
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        libc.dll.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # we died before the prctl
            os._exit(0)
        for fd in map(int, os.listdir("/proc/self/fd")):
            if fd > 2 and fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
    return pid


class _Child:
    """A forked child that writes MARKER into self.mark, reports ready, then blocks in read()."""
    MARKER = b"snapshotd-probe!"

    def __enter__(self):
        self.mark = ctypes.create_string_buffer(16)
        r1, w1 = os.pipe()
        self.r2, self.w2 = os.pipe()
        self.pid = _fork_bound(keep=(w1, self.r2))
        if self.pid == 0:
            try:
                ctypes.memmove(self.mark, self.MARKER, 16)
                os.write(w1, b"x"), os.read(self.r2, 1)
            finally:
                os._exit(0)
        os.close(w1), os.read(r1, 1), os.close(r1)
        return self

    def __exit__(self, *exc):
        os.kill(self.pid, signal.SIGKILL), os.waitpid(self.pid, 0)
        os.close(self.r2), os.close(self.w2)


def _in_child(fn) -> int:
    """Exit code of fn() run in a forked child (99 if it raised)."""
    pid = _fork_bound()
    if pid == 0:
        try:
            os._exit(fn())
        except BaseException:
            os._exit(99)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def probe_ptrace():
    # ptrace(PTRACE_SEIZE) + PTRACE_INTERRUPT on a forked child, waitpid for the stop; while
    # stopped, PTRACE_GETREGSET(NT_X86_XSTATE) gives the xstate size (and XCR0 at byte 464).
    with _Child() as c:
        for req, name in ((sc.PTRACE_SEIZE, "PTRACE_SEIZE"), (sc.PTRACE_INTERRUPT, "PTRACE_INTERRUPT")):
            if libc.dll.ptrace(req, c.pid, None, None) != 0:
                return False, _errno(name), None
        _, st = os.waitpid(c.pid, sc.WALL)
        if not os.WIFSTOPPED(st):
            return False, f"child did not stop (status {st:#x})", None
        buf = ctypes.create_string_buffer(65536)
        iov = (ctypes.c_uint64 * 2)(ctypes.addressof(buf), len(buf))
        xs = None
        if libc.dll.ptrace(sc.PTRACE_GETREGSET, c.pid, sc.NT_X86_XSTATE, ctypes.addressof(iov)) == 0:
            xs = (iov[1], struct.unpack_from("<Q", buf, 464)[0])
        return True, f"seized and interrupted child {c.pid}", xs


def probe_process_vm_readv():
    # process_vm_readv(2): read the marker the child wrote after fork.
    with _Child() as c:
        out = ctypes.create_string_buffer(16)
        local = (ctypes.c_uint64 * 2)(ctypes.addressof(out), 16)
        remote = (ctypes.c_uint64 * 2)(ctypes.addressof(c.mark), 16)
        if libc.raw_syscall(sc.PROCESS_VM_READV, c.pid, local, 1, remote, 1, 0) != 16:
            return False, _errno("process_vm_readv")
        return out.raw == c.MARKER, "read 16 bytes from a child" if out.raw == c.MARKER else "wrong bytes read"


def probe_clone3_set_tid():
    # clone3(2) with set_tid = [a free PID]: the child must come out at exactly that PID.
    pid_max, last = int(open("/proc/sys/kernel/pid_max").read()), "no free PID found"
    for _ in range(8):
        want = random.randint(max(300, pid_max // 2), pid_max - 1)
        if os.path.exists(f"/proc/{want}"):
            continue
        tid = ctypes.c_int32(want)
        args = (ctypes.c_uint64 * 11)(0, 0, 0, 0, signal.SIGCHLD, 0, 0, 0, ctypes.addressof(tid), 1, 0)
        r = libc.raw_syscall(sc.CLONE3, ctypes.byref(args), ctypes.sizeof(args), via=libc.pydll)
        if r == 0:
            os._exit(0)
        if r > 0:
            os.waitpid(r, 0)
            return r == want, f"child created at chosen PID {want}" if r == want else f"asked {want}, got {r}"
        last = _errno(f"clone3(set_tid=[{want}])")
        if ctypes.get_errno() != sc.EEXIST:  # raced with another fork, try another PID
            break
    return False, last


def probe_pagemap():
    # read(/proc/PID/pagemap) of a child: its touched marker page must be present (bit 63).
    with _Child() as c:
        with open(f"/proc/{c.pid}/pagemap", "rb") as f:
            f.seek(ctypes.addressof(c.mark) // sc.PAGE * 8)
            (e,) = struct.unpack("<Q", f.read(8))
    if not e >> 63 & 1:
        return False, f"marker page not reported present (entry {e:#x})"
    return True, "present bit seen" + ("" if e & ((1 << 55) - 1) else " (PFNs hidden: no CAP_SYS_ADMIN)")


def probe_pr_set_mm_map():
    # prctl(PR_SET_MM, PR_SET_MM_MAP) in a forked child, setting its own layout back
    # (fields from /proc/self/stat, brk from brk(0)), auxv untouched, exe_fd = -1.
    def child():
        f = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
        g = lambda n: int(f[n - 3])  # noqa: E731  (field numbers as in proc(5))
        brk = libc.raw_syscall(sc.BRK, 0)
        m = struct.pack("<11QQII", g(26), g(27), g(45), g(46), g(47), brk, g(28), g(48), g(49), g(50),
                        g(51), 0, 0, 0xFFFFFFFF)
        r = libc.dll.prctl(sc.PR_SET_MM, sc.PR_SET_MM_MAP, ctypes.create_string_buffer(m, len(m)),
                           ctypes.c_ulong(len(m)), ctypes.c_ulong(0))
        return 0 if r == 0 else min(ctypes.get_errno(), 98)
    cfg, rc = _kconfig("CHECKPOINT_RESTORE"), _in_child(child)
    if rc == 0:
        return True, f"set a child's own mm layout (CONFIG_CHECKPOINT_RESTORE={cfg})"
    return False, f"prctl(PR_SET_MM_MAP): {os.strerror(rc)} (CONFIG_CHECKPOINT_RESTORE={cfg})"


def probe_kcmp():
    # kcmp(2) KCMP_FILE: a dup compares equal (0), a re-open does not.
    fd = os.open("/proc/self/stat", os.O_RDONLY)
    dup, other, me = os.dup(fd), os.open("/proc/self/stat", os.O_RDONLY), os.getpid()
    a = libc.raw_syscall(sc.KCMP, me, me, sc.KCMP_FILE, fd, dup)
    b = libc.raw_syscall(sc.KCMP, me, me, sc.KCMP_FILE, fd, other)
    err = _errno("kcmp")
    os.close(fd), os.close(dup), os.close(other)
    return (False, err) if a < 0 or b < 0 else (a == 0 and b != 0, f"KCMP_FILE dup={a} reopen={b}")


def probe_pidfd():
    # pidfd_open(2) on a child, then pidfd_getfd(2) of one of its pipe fds.
    with _Child() as c:
        pfd = os.pidfd_open(c.pid)
        try:
            fd = libc.raw_syscall(sc.PIDFD_GETFD, pfd, c.r2, 0)
            if fd < 0:
                return False, _errno("pidfd_getfd")
            os.close(fd)
            return True, "pidfd_open + pidfd_getfd of a child's fd"
        finally:
            os.close(pfd)


def probe_uffd_wp_async():
    # userfaultfd(2) (UFFD_USER_MODE_ONLY) + ioctl UFFDIO_API asking WP_ASYNC | WP_UNPOPULATED.
    fd = libc.raw_syscall(sc.USERFAULTFD, os.O_CLOEXEC | os.O_NONBLOCK | 1)
    if fd < 0:
        return False, _errno("userfaultfd")
    try:
        want = (1 << 15) | (1 << 13)
        api = (ctypes.c_uint64 * 3)(0xAA, want, 0)
        if libc.dll.ioctl(fd, ctypes.c_ulong(0xC018AA3F), api) != 0:  # _IOWR(0xAA, 0x3F, 24)
            return False, _errno("UFFDIO_API(WP_ASYNC|WP_UNPOPULATED)")
        return api[1] & want == want, f"features {api[1]:#x}"
    finally:
        os.close(fd)


def probe_pagemap_scan():
    # ioctl(/proc/self/pagemap, PAGEMAP_SCAN) over one touched page, asking PAGE_IS_PRESENT (1<<3).
    m = mmap.mmap(-1, sc.PAGE)
    m[0:1], a, region = b"x", _addr(m), (ctypes.c_uint64 * 3)()
    # size, flags, start, end, walk_end, vec, vec_len, max_pages, inverted, mask, anyof, return_mask
    arg = (ctypes.c_uint64 * 12)(96, 0, a, a + sc.PAGE, 0, ctypes.addressof(region), 1, 0, 0, 0, 1 << 3, 1 << 3)
    try:
        with open("/proc/self/pagemap", "rb") as f:
            n = libc.dll.ioctl(f.fileno(), ctypes.c_ulong(0xC0606610), arg)  # _IOWR('f', 16, 96)
        if n < 0:
            return False, _errno("PAGEMAP_SCAN")
        return bool(n == 1 and region[0] == a and region[2] & 8), f"{n} region(s), categories {region[2]:#x}"
    finally:
        m.close()


def probe_soft_dirty():
    # write "4" to /proc/self/clear_refs in a child, write to a page, expect pagemap bit 55.
    def child():
        m = mmap.mmap(-1, sc.PAGE)
        m[0:1] = b"x"
        with open("/proc/self/clear_refs", "w") as f:
            f.write("4")  # CLEAR_REFS_SOFT_DIRTY
        m[0:1] = b"y"
        with open("/proc/self/pagemap", "rb") as f:
            f.seek(_addr(m) // sc.PAGE * 8)
            return int(struct.unpack("<Q", f.read(8))[0] >> 55 & 1 == 0)
    cfg, rc = _kconfig("MEM_SOFT_DIRTY"), _in_child(child)
    what = {0: "bit 55 set after a write", 1: "bit 55 not set after a write"}.get(rc, f"probe failed ({rc})")
    return rc == 0, f"{what} (CONFIG_MEM_SOFT_DIRTY={cfg})"


def probe_time_ns():
    # unshare(CLONE_NEWTIME) in a forked child.
    rc = _in_child(lambda: 0 if libc.dll.unshare(sc.CLONE_NEWTIME) == 0 else min(ctypes.get_errno(), 98))
    return rc == 0, "unshare(CLONE_NEWTIME) worked" if rc == 0 else f"unshare(CLONE_NEWTIME): {os.strerror(rc)}"
