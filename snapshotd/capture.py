"""Copy-on-write capture: a consistent copy of a frozen process's private
memory that can be read after the process runs again.

In the frozen process, inject clone(CLONE_FILES | CLONE_FS): a child C with
a copy-on-write copy of the address space, the SAME fd table (so no file,
pipe end or socket gains a reference while C lives: a peer still sees EOF
when the process closes its end) and exit signal 0 (no SIGCHLD; waitpid(-1)
in the process does not see it).  The thread that clones is ptrace-seized with
PTRACE_O_TRACECLONE, so C is attached to us and starts stopped: it never runs
a single instruction.  PTRACE_O_EXITKILL (inherited by C) kills C if
snapshotd dies.  The process resumes at once; we read C with
a ring of shared memory that C fills itself (ChildRing); then SIGKILL C,
and reap it by injecting
wait4(C, NULL, __WALL|WNOHANG) into the process (its parent).

Not copied by fork, so read while frozen instead: MAP_SHARED mappings (C sees
the process's later writes), MADV_DONTFORK ("dc": absent in C) and
MADV_WIPEONFORK ("wf": zeros in C) areas.
The freeze is then the clone itself (page-table copy: ~24 ms per GiB of 4 KiB
pages here, ~1-3 ms with huge pages) instead of a copy of all memory.
"""
from __future__ import annotations

import errno
import mmap
import os
import signal

import numpy as np

from . import engine
from . import syscalls as sc
from ._engine import ffi, lib

CLONE = 56
CLONE_FS, CLONE_FILES = 0x200, 0x400
PTRACE_O_TRACECLONE, PTRACE_O_EXITKILL = 0x8, 0x100000
WNOHANG, WALL = 1, 0x40000000
PWRITEV, MEMFD_CREATE = 296, 319
MFD_CLOEXEC, MFD_NOEXEC_SEAL = 1, 8
CLOSE_RANGE_UNSHARE = 2
IOV_MAX = 1024


def needs_frozen_read(shared: bool, vmflags) -> bool:
    """Whether a mapping's pages must be read while the process is frozen."""
    return shared or "dc" in vmflags or "wf" in vmflags


def fork_held_child(t: engine.Tracee) -> int:
    """Clone the frozen process t (its main thread, stopped, with a code
    page set up); returns the PID of the stopped child."""
    engine.check(lib.snp_set_ptrace_options(t.pid, PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL), "PTRACE_SETOPTIONS")
    r = t.syscall(CLONE, CLONE_FILES | CLONE_FS, 0, 0, 0, 0)  # low byte 0: exit signal 0
    child = t.last_new_thread()
    if r < 0:
        raise engine.EngineError(-r, f"clone in PID {t.pid}: {os.strerror(-r)}")
    if child <= 0:
        child = r
    # the auto-attached child reports its initial PTRACE_EVENT_STOP
    engine.check(lib.snp_wait_stop(child, ffi.NULL), f"wait for the capture child {child}")
    return child


def release_child(pid: int, child: int, code_page: int, code_size: int) -> None:
    """Kill the capture child, reap it inside pid (its parent), and unmap
    pid's code page (it executes there, so it returns into SIGSEGV, which is
    not delivered).  Only the main thread is stopped for this."""
    try:
        os.kill(child, signal.SIGKILL)
    except ProcessLookupError:
        pass
    lib.snp_wait_stop(child, ffi.NULL)  # the exit, as its tracer
    try:
        engine.seize(pid)
    except engine.EngineError:
        return  # the process is gone: so is its zombie child
    try:
        t = engine.Tracee(pid, code=code_page)
        t.syscall(sc.WAIT4, child, 0, WNOHANG | WALL, 0)
        t.syscall(sc.MUNMAP, code_page, code_size, expect_segv=True)
    finally:
        engine.detach(pid)


class ChildRing:
    """The held child C writes its own pages into a ring of slots in a memfd
    that snapshotd maps: pwritev() from C's memory is one copy, made on C's
    CPU.  Reading C through /proc/PID/mem instead costs two copies and a page
    lookup per page on our side (measured: 2.2x the time), and
    process_vm_readv would make the kernel copy every page it pins first
    (FOLL_PIN "unshares" a page C shares copy-on-write with the process).

    C first trades its fd table (shared with the process: CLONE_FILES) for
    an empty one of its own with close_range(0, ~0, CLOSE_RANGE_UNSHARE), so
    the memfd never appears in the process and C holds no other file.  The
    syscalls run in C through `code` and its copy of the scratch area; C
    never runs code of its own.  The ring's pages are charged to C's memory
    cgroup (the job's): `fits` says whether it has room for them."""

    def __init__(self, child: int, code: int, scratch: int, scratch_size: int, slots: int, slot_pages: int):
        self.pid = child
        self.t = engine.Tracee(child, code=code, scratch=scratch, scratch_size=scratch_size)
        self.slots, self.slot_bytes = slots, slot_pages * engine.PAGE
        self.fd = -1
        self.map = None
        engine.check(lib.snp_setsigmask(child, (1 << 64) - 1), f"block the signals of capture child {child}")
        self.t.call("close_range", sc.CLOSE_RANGE, 0, 0xFFFFFFFF, CLOSE_RANGE_UNSHARE)
        name = self.t.put(0, b"snapshotd-capture\0")
        cfd = self.t.syscall(MEMFD_CREATE, name, MFD_CLOEXEC | MFD_NOEXEC_SEAL)
        if cfd == -errno.EINVAL:  # before Linux 6.3
            cfd = self.t.call("memfd_create", MEMFD_CREATE, name, MFD_CLOEXEC)
        elif cfd < 0:
            raise engine.EngineError(-cfd, f"memfd_create in {child}: {os.strerror(-cfd)}")
        self.child_fd = cfd
        try:
            self.fd = os.open(f"/proc/{child}/fd/{cfd}", os.O_RDWR | os.O_CLOEXEC)
            os.ftruncate(self.fd, slots * self.slot_bytes)
            self.map = mmap.mmap(self.fd, slots * self.slot_bytes, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            self.close()
            raise
        self.data = np.frombuffer(self.map, dtype=np.uint8)
        self.iov_off = 64  # after the name in the scratch area
        self.iov = np.empty(2 * IOV_MAX, dtype=np.uint64)
        self.iov_c = ffi.from_buffer("uint64_t[]", self.iov)
        self.i = ffi.new("long *")
        self.job = None

    @staticmethod
    def fits(pid: int, nbytes: int) -> bool:
        """Whether the memory cgroup of pid and each of its ancestors has
        twice nbytes to spare (cgroup v2: memory.max - memory.current; v1:
        memory.limit_in_bytes - memory.usage_in_bytes): the ring must never
        push a job into its OOM killer."""
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                lines = f.read().splitlines()
        except OSError:
            return False
        for ln in lines:
            _n, ctrls, path = ln.split(":", 2)
            if ctrls == "":
                base, limit, usage = "/sys/fs/cgroup", "memory.max", "memory.current"
            elif "memory" in ctrls.split(","):
                base, limit, usage = "/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes"
            else:
                continue
            d = (base + path).rstrip("/")
            while d.startswith(base + "/"):
                try:
                    with open(f"{d}/{limit}") as f:
                        mx = f.read().strip()
                    if mx != "max" and int(mx) < 1 << 62:  # v1 "no limit" is ~2^63
                        with open(f"{d}/{usage}") as f:
                            if int(mx) - int(f.read()) < 2 * nbytes:
                                return False
                except FileNotFoundError:
                    pass  # no memory controller at this level
                except (OSError, ValueError):
                    return False
                d = os.path.dirname(d)
        return True

    def slot(self, k: int) -> np.ndarray:
        return self.data[k * self.slot_bytes:(k + 1) * self.slot_bytes]

    def start(self, k: int, addrs, n: int) -> None:
        """C begins writing the pages at addrs[0..n) (a uint64_t[] cdata,
        ascending) into slot k; finish() waits for them."""
        self.i[0] = 0
        self.job = (k, addrs, n)
        self._piece()

    def _piece(self) -> None:
        k, addrs, n = self.job
        first = self.i[0]
        nr = lib.snp_page_iov(addrs, n, self.i, self.iov_c)  # up to IOV_MAX runs
        at = self.t.scratch + self.iov_off
        engine.check(lib.snp_mem_write(self.pid, at, self.iov_c, nr * 16), f"write to capture child {self.pid}")
        self.first, self.want = first, (self.i[0] - first) * engine.PAGE
        self.t.start_syscall(PWRITEV, self.child_fd, at, nr, k * self.slot_bytes + first * engine.PAGE, 0)

    def finish(self) -> int:
        """How many of the pages are in the slot, from the first: fewer than
        n when C could not read one (a PROT_NONE page, say)."""
        _k, _addrs, n = self.job
        while True:
            r = self.t.finish_syscall()
            if r != self.want:
                self.job = None
                return self.first + max(r, 0) // engine.PAGE
            if self.i[0] >= n:
                self.job = None
                return n
            self._piece()

    def close(self) -> None:
        if self.job is not None:  # never leave C in the middle of a syscall
            try:
                self.t.finish_syscall()
            except engine.EngineError:
                pass
            self.job = None
        if self.map is not None:
            self.data = None
            try:
                self.map.close()
            except BufferError:
                pass  # views still alive: the mapping goes with them
            self.map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
