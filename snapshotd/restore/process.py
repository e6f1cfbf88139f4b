"""One process rebuilt, syscall by syscall, in a stub process that has the
original PID (engine/csrc/spawn.c explains the stub; restore/tree.py creates
the stubs of a whole tree and drives a Restorer for each live process, then
resumes them all). The order of the steps is in restore/__init__.py and
docs/INTERNALS.md."""
from __future__ import annotations

import os
import resource
import struct
import time
from dataclasses import dataclass, field

import numpy as np

from ..kernel import engine, inject, procfs
from .. import fdkinds
from ..fdkinds import sysvshm
from ..kernel import syscalls as sc
from .._engine import ffi, lib
from ..progress import Progress
from ..kernel.fscreds import as_file_creds, creds_of
from ..image import File, Process
from .cow import keep_mask
from .shared import SharedObjects
from ..storage.snapshot import SnapshotReader

VDSO_NAMES = ("[vvar]", "[vvar_vclock]", "[vdso]")
OPEN_STRIP = os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOCTTY


class RestoreError(Exception):
    pass


@dataclass
class RestoreStats:
    wall_s: float = 0.0
    pages: int = 0
    pids: list = field(default_factory=list)  # every restored process, root first
    pidns: bool = False  # restored into a new PID namespace
    outside_pids: list = field(default_factory=list)  # pids as seen from outside it (the same without pidns)


def _wait_zombie_gone(pid: int, timeout: float = 3.0) -> None:
    """A killed process holds its PID until its parent reaps it (PID 1 here
    can take about a second): wait a little for a zombie to go."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if procfs.stat_fields(pid)[2] not in ("Z", "X"):
                return
        except (procfs.ProcGone, ValueError):
            return
        time.sleep(0.02)


def _check_pids_free(proc: Process) -> None:
    """Fail, naming the holder, if the PID or a TID of proc is taken (a
    zombie has no threads in the image: just its PID)."""
    pid = proc.pid
    for tid in [t.tid for t in proc.threads] or [pid]:
        _wait_zombie_gone(tid)
        if os.path.exists(f"/proc/{tid}"):
            try:
                holder = int(procfs.status(tid).get("Tgid", tid))
            except procfs.ProcGone:
                continue
            what = "PID" if tid == pid else f"TID {tid} (thread of PID {pid})"
            raise RestoreError(
                f"cannot restore: {what} {tid} is in use by process {holder} ({procfs.proc_name(holder)})"
                if what == "PID" else
                f"cannot restore: {what} is in use by process {holder} ({procfs.proc_name(holder)})")


def _find_hole(busy: list[tuple[int, int]], size: int) -> int:
    """An address range of `size` bytes free in every listed range set."""
    busy = sorted(busy)
    cand = 0x10000000
    for a, b in busy:
        if cand + size <= a:
            break
        cand = max(cand, (b + 0xFFFF) & ~0xFFFF)
    if cand + size > 0x7FFFFFFFF000:
        raise RestoreError("no free address range for the restorer's scratch page")
    return cand


def _cap_last_cap() -> int:
    """The highest capability number this kernel knows (capabilities(7))."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def _fixup_restart(regs: engine.Regs) -> engine.Regs:
    """A thread stopped inside an interrupted syscall has rax = -ERESTART*:
    make it re-execute the syscall when it resumes (rip back over the 2-byte
    `syscall`, rax = the syscall number)."""
    rax = regs.rax - (1 << 64) if regs.rax >= 1 << 63 else regs.rax
    orig = regs.orig_rax
    if orig < 1 << 63 and -rax in (sc.ERESTARTSYS, sc.ERESTARTNOINTR, sc.ERESTARTNOHAND, sc.ERESTART_RESTARTBLOCK):
        regs.set("rax", orig)
        regs.set("rip", regs.rip - 2)
    regs.set("orig_rax", -1)
    return regs


class Restorer:
    """Rebuilds one process in a stub (tree_restore.py creates the stubs and
    calls build(), then resume() once every process of the tree is built)."""

    def __init__(self, proc: Process, reader: SnapshotReader, stats: RestoreStats, shared: SharedObjects):
        self.p = proc
        self.reader = reader
        self.stats = stats
        self.s = 0
        self.t: engine.Tracee | None = None
        self.remote: inject.Remote | None = None  # the scratch area (setup_scratch)
        self.rfds: list[int | None] = []  # our fd for each File, opened lazily
        self.pidfd = -1  # pidfd of us, inside the target
        self.shared = shared  # objects several processes of the tree use
        self.notes = shared.notes
        # TID in the image (and inside the process's PID namespace) -> TID as
        # we see it, for ptrace and /proc; they differ when the tree is
        # restored into a new PID namespace
        self.outer: dict[int, int] = shared.outer
        self.kept: dict = {}  # mappings the stub holds already (restore_cow.py)

    # -- files on our side --
    def open_file(self, idx: int) -> int:
        while len(self.rfds) <= idx:
            self.rfds.append(None)
        if self.rfds[idx] is None:
            f = self.p.files[idx]
            if f.share:  # one description for every process that shares it
                if f.share not in self.shared.descs:
                    self.shared.descs[f.share] = self._open(f)
                return self.shared.descs[f.share]
            self.rfds[idx] = self._open(f)
        return self.rfds[idx]

    def _open(self, f: File) -> int:
        flags = (f.flags & ~OPEN_STRIP) | os.O_CLOEXEC
        try:
            if f.kind == "memfd" or (f.kind == "reg" and f.deleted):
                # one object per dumped inode, however many fds and mappings use it
                key = (f.dev, f.inode)
                if key not in self.shared.inodes:
                    self.shared.inodes[key] = self._memfd(f) if f.kind == "memfd" else self._ghost(f, os.O_RDWR)
                # a /proc/self/fd link is a symlink: O_NOFOLLOW (UCX opens its
                # /dev/shm files with it) would give ELOOP
                fd = os.open(f"/proc/self/fd/{self.shared.inodes[key]}", flags & ~os.O_NOFOLLOW)
            elif f.kind in ("pipe", "fifo"):
                with as_file_creds(self.p.creds if f.kind == "fifo" else None):  # a FIFO is opened by path
                    fd = self.shared.pipe_end(f)
            elif f.kind == "pipe-ext":
                fd = self._external_pipe(f, flags)
            elif f.kind in fdkinds.KINDS:
                return fdkinds.restore(self, f)
            else:
                # by path, with the process's own credentials, never ours (fscreds.py)
                try:
                    with as_file_creds(self.p.creds):
                        if f.content is not None:  # tmpfs: put the saved contents back
                            with open(f.path, "wb") as out:
                                out.write(self.reader.file_content(f.content))
                        fd = os.open(f.path, flags)
                except PermissionError as e:
                    fd = self._same_file(f, flags, e)
            if f.pos and f.kind in ("reg", "memfd", "chr", "dir"):
                os.lseek(fd, f.pos, os.SEEK_SET)
            return fd
        except OSError as e:
            uid = creds_of(self.p.creds)[0]
            who = f" as uid {uid} (the process's own credentials)" if uid != 0 and os.geteuid() == 0 else ""
            raise RestoreError(f"cannot reopen {f.path}{who}: {e.strerror}") from None
        except fdkinds.Failed as e:
            raise RestoreError(f"cannot restore {f.path}: {e}") from None

    def _same_file(self, f: File, flags: int, denied: OSError) -> int:
        """The process's user may not open f by path now, yet the process had
        it open at the dump: opened before it dropped privileges, or its
        executable in a directory only root may search. Give it back only
        if the path still names that very file (device and inode as dumped):
        found with O_PATH (which opens nothing: no side effect of opening a
        device), checked with fstat, reopened through /proc/self/fd. Any
        other file at the path (e.g. a root-only one swapped in since) is
        refused with the original error."""
        if os.geteuid() != 0 or not f.inode or f.content is not None:
            raise denied
        try:
            pfd = os.open(f.path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            raise denied from None
        try:
            st = os.fstat(pfd)
            if (st.st_dev, st.st_ino) != (f.dev, f.inode):
                raise denied
            return os.open(f"/proc/self/fd/{pfd}", flags & ~os.O_NOFOLLOW)
        finally:
            os.close(pfd)

    def _memfd(self, f: File) -> int:
        fd = os.memfd_create(f.path[len("/memfd:"):] or "memfd", os.MFD_CLOEXEC)
        if f.content:
            os.write(fd, self.reader.file_content(f.content))
        os.ftruncate(fd, f.size)
        return fd

    def _ghost(self, f: File, flags: int) -> int:
        """A file that was unlinked while open: recreate it with its saved
        contents under its old name (or beside it), open, unlink."""
        path = f.path
        if os.path.exists(path):
            path = f"{f.path}.snapshotd-ghost-{os.getpid()}"
        try:
            wfd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, f.mode)
        except OSError:
            path = None
            wfd = os.open(os.path.dirname(f.path) if os.path.isdir(os.path.dirname(f.path)) else "/tmp",
                          os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, f.mode)
        try:
            if f.content:
                os.write(wfd, self.reader.file_content(f.content))
            os.ftruncate(wfd, f.size)
            fd = os.open(f"/proc/self/fd/{wfd}", flags & ~os.O_NOFOLLOW)
        finally:
            os.close(wfd)
            if path:
                os.unlink(path)
        return fd

    def _external_pipe(self, f: File, flags: int) -> int:
        """A pipe whose other end lives outside the snapshot: reconnect to it
        if some process still holds it, else give /dev/null."""
        want = f"pipe:[{f.inode}]"
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == self.s:
                continue
            try:
                for fd in os.listdir(f"/proc/{d}/fd"):
                    if os.readlink(f"/proc/{d}/fd/{fd}") == want:
                        return os.open(f"/proc/{d}/fd/{fd}", flags)
            except OSError:
                continue
        self.notes.append(f"pipe {want} no longer exists: fd replaced by /dev/null")
        return os.open("/dev/null", flags)

    def give_fd(self, rfd: int) -> int:
        """Copy our fd rfd into the target (pidfd_getfd); returns its number there."""
        return self.t.call("pidfd_getfd", sc.PIDFD_GETFD, self.pidfd, rfd, 0)

    # -- steps --
    def attach(self, stub: int, code: int):
        """Work on the stub with PID stub, whose `code` holds "syscall; int3"."""
        self.s = stub
        self.t = engine.Tracee(self.s, code=code)

    def setup_scratch(self):
        busy = [(m.start, m.end) for m in self.p.mappings]
        busy += [(m.start, m.end) for m in procfs.maps(self.s, with_flags=False)]
        self.remote = inject.infect_at(self.t, _find_hole(busy, inject.SCRATCH_SIZE))
        self.t = self.remote.t
        self.scratch = (self.remote.base, self.remote.base + inject.SCRATCH_SIZE)
        # a pidfd of us, left in every stub by spawn.c (pidfd_open(our PID)
        # would fail inside a new PID namespace)
        self.pidfd = lib.SNP_STUB_PIDFD

    def clear_stub(self):
        """Unmap everything of the stub but the vDSO group, the scratch and
        the memory it already holds for us (restore_cow.py)."""
        cow = getattr(self.shared, "cow", None)
        self.kept = cow.kept(self.p) if cow else {}
        for m in procfs.maps(self.s, with_flags=False):
            if m.path in VDSO_NAMES or m.path == "[vsyscall]" or m.start == self.scratch[0]:
                continue
            lo = m.start
            for s, e in sorted(self.kept):  # kept regions may be merged into one VMA
                if e <= lo or s >= m.end:
                    continue
                if s > lo:
                    self.t.call(f"munmap {m.path}", sc.MUNMAP, lo, s - lo)
                lo = max(lo, e)
            if lo < m.end:
                self.t.call(f"munmap {m.path}", sc.MUNMAP, lo, m.end - lo)

    def move_vdso(self):
        cur = {m.path: m for m in procfs.maps(self.s, with_flags=False) if m.path in VDSO_NAMES}
        want = {m.path: m for m in self.p.mappings if m.path in VDSO_NAMES}
        if not want:
            for m in cur.values():
                self.t.call("munmap vdso", sc.MUNMAP, m.start, m.end - m.start)
            return
        for name in VDSO_NAMES:
            if (name in cur) != (name in want) or (
                    name in cur and cur[name].end - cur[name].start != want[name].end - want[name].start):
                raise RestoreError("the vDSO layout of this kernel differs from the snapshot's; restore on the kernel it was taken on")
        if all(cur[n].start == want[n].start for n in cur):
            return
        # move the group to a free spot first, then to the dumped address:
        # the old and new places may overlap
        lo = min(m.start for m in cur.values())
        hi = max(m.end for m in cur.values())
        busy = [(m.start, m.end) for m in self.p.mappings] + [self.scratch] + [(lo, hi)]
        tmp = _find_hole(busy, hi - lo)
        for stage in ("tmp", "final"):
            for name in VDSO_NAMES:
                if name not in cur:
                    continue
                m = cur[name]
                size = m.end - m.start
                src = m.start if stage == "tmp" else tmp + (m.start - lo)
                dst = tmp + (m.start - lo) if stage == "tmp" else want[name].start
                self.t.call(f"mremap {name}", sc.MREMAP, src, size, size, sc.MREMAP_MAYMOVE | sc.MREMAP_FIXED, dst)

    def shmem_fds(self) -> dict:
        """One shmem object per dumped shared-anonymous inode, as an fd in the
        target, so that every view maps the same pages (at its own offset)."""
        fds = {}
        for ino in {m.shmem for m in self.p.mappings if m.shared and m.shmem}:
            if ino not in self.shared.shmem:  # the first process of the tree to map it creates it
                size = self.shared.shmem_size[ino]
                addr = self.t.call("mmap shared anon", sc.MMAP, 0, size, sc.PROT_READ | sc.PROT_WRITE,
                                   sc.MAP_SHARED | sc.MAP_ANONYMOUS, -1, 0)
                self.shared.shmem[ino] = os.open(f"/proc/{self.s}/map_files/{addr:x}-{addr + size:x}",
                                                 os.O_RDWR | os.O_CLOEXEC)
                self.t.call("munmap", sc.MUNMAP, addr, size)
            fds[ino] = self.give_fd(self.shared.shmem[ino])
        return fds

    def map_memory(self):
        p = self.p
        self.fix_prot = []
        shm = self.shmem_fds()
        for m in p.mappings:
            if m.pages == "none":
                continue
            if m.pages == "sysv":
                try:
                    sysvshm.attach(self, m)
                except fdkinds.Failed as e:
                    raise RestoreError(str(e)) from None
                continue
            size = m.end - m.start
            flags = sc.MAP_FIXED | (sc.MAP_SHARED if m.shared else sc.MAP_PRIVATE)
            if "gd" in m.vmflags:
                flags |= sc.MAP_GROWSDOWN
            if "nr" in m.vmflags:
                flags |= sc.MAP_NORESERVE
            prot = m.prot
            fd = -1
            if m.shared and m.shmem:
                fd = shm[m.shmem]
            elif m.file is None:
                flags |= sc.MAP_ANONYMOUS
            else:
                fd = self.give_fd(self.open_file(m.file))
            if (m.start, m.end) in self.kept:  # premapped read-write and filled (restore_cow.py)
                if m.prot != sc.PROT_READ | sc.PROT_WRITE:
                    self.fix_prot.append(m)
                continue
            if m.pages in ("anon", "cow") and prot != prot | sc.PROT_READ | sc.PROT_WRITE:
                prot |= sc.PROT_READ | sc.PROT_WRITE  # filled first, protected after
                self.fix_prot.append(m)
            try:
                self.t.call(f"mmap {m.start:#x}-{m.end:#x} {m.path}", sc.MMAP, m.start, size, prot, flags, fd,
                            m.offset if fd >= 0 else 0)
            finally:
                if m.file is not None:
                    self.t.call("close", sc.CLOSE, fd)
        for fd in shm.values():
            self.t.call("close", sc.CLOSE, fd)
        cow = getattr(self.shared, "cow", None)
        skip = cow.prepare(self.t, p, self.kept) if self.kept else None
        memfd = os.open(f"/proc/{self.s}/mem", os.O_RDWR)
        bar = Progress(f"restore {p.pid}", len(self.reader.page_table(p.pid)[0]) * engine.PAGE)
        try:
            for addrs, srcs, _keep in self.reader.iter_page_sources(p.pid):
                bar.add(len(addrs) * engine.PAGE)
                if skip is not None and len(skip):  # pages the stub holds already (restore_cow.py)
                    keep = keep_mask(addrs, skip)
                    addrs, srcs = np.ascontiguousarray(addrs[keep]), np.ascontiguousarray(srcs[keep])
                    if not len(addrs):
                        continue
                engine.check(lib.snp_write_pages_from(self.s, memfd, ffi.from_buffer("uint64_t[]", addrs),
                                                      ffi.from_buffer("uint64_t[]", srcs), len(addrs)),
                             "write pages")
                self.stats.pages += len(addrs)
        finally:
            bar.close()
            os.close(memfd)
        for m in self.fix_prot:
            self.t.call("mprotect", sc.MPROTECT, m.start, m.end - m.start, m.prot)
        advice = {"dd": sc.MADV_DONTDUMP, "dc": sc.MADV_DONTFORK, "wf": sc.MADV_WIPEONFORK,
                  "hg": sc.MADV_HUGEPAGE, "nh": sc.MADV_NOHUGEPAGE}
        for m in p.mappings:
            for flag, adv in advice.items():
                if flag in m.vmflags and m.pages != "none":
                    self.t.syscall(sc.MADVISE, m.start, m.end - m.start, adv)

    def set_mm(self):
        mm = self.p.mm
        auxv = mm["auxv"]
        auxv_addr = self.t.put(1024, auxv)
        exe_fd = self.give_fd(self.open_file(self.p.exe_file)) if self.p.exe_file is not None else -1
        st = struct.pack("<11QQII", mm["start_code"], mm["end_code"], mm["start_data"], mm["end_data"],
                         mm["start_brk"], mm["brk"], mm["start_stack"], mm["arg_start"], mm["arg_end"],
                         mm["env_start"], mm["env_end"], auxv_addr, len(auxv), exe_fd & 0xFFFFFFFF)
        addr = self.t.put(0, st)
        try:
            self.t.call("prctl(PR_SET_MM_MAP)", sc.PRCTL, sc.PR_SET_MM, sc.PR_SET_MM_MAP, addr, len(st), 0)
        finally:
            if exe_fd >= 0:
                self.t.call("close", sc.CLOSE, exe_fd)

    def set_process_state(self):
        p, t = self.p, self.t
        # handlers: the dumped ones, and the default for what the stub inherited
        st = procfs.status(self.s)
        inherited = int(st["SigIgn"], 16) | int(st["SigCgt"], 16)
        for sig in range(1, sc.NSIG + 1):
            if sig in (sc.SIGKILL, sc.SIGSTOP):
                continue
            act = p.sigactions.get(str(sig))
            if act is None and not inherited & (1 << (sig - 1)):
                continue
            addr = t.put(0, struct.pack("<4Q", *(act or (0, 0, 0, 0))))
            t.call(f"rt_sigaction({sig})", sc.RT_SIGACTION, sig, addr, 0, 8)
        for which, val in enumerate(p.itimers):
            if val[2:] == [0, 0] and val[:2] != [0, 0]:
                # expired while frozen: the kernel re-arms ITIMER_REAL only when
                # the pending SIGALRM is dequeued; a zero value would disarm it
                val = val[:2] + val[:2]
            if any(val):
                t.call("setitimer", sc.SETITIMER, which, t.put(0, struct.pack("<4q", *val)), 0)
        t.call("umask", sc.UMASK, p.umask)
        if p.cwd.endswith(" (deleted)") or not os.path.isdir(p.cwd):
            self.notes.append(f"working directory {p.cwd} is gone; using /")
            cwd = "/"
        else:
            cwd = p.cwd
        # entered with the process's own credentials: found (O_PATH) and
        # searchable (faccessat(AT_EACCESS) uses the fs ids) as its user; if
        # its user may not, only the very directory it was in (cwd_id), as
        # for files (_same_file); then fchdir(2) in the process
        dfd = -1
        try:
            with as_file_creds(p.creds):
                dfd = os.open(cwd, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                if not os.access(f"/proc/self/fd/{dfd}", os.X_OK, effective_ids=True):
                    raise PermissionError(13, "Permission denied")
        except PermissionError as e:
            if dfd >= 0:
                os.close(dfd)
            f = File(kind="dir", path=cwd, inode=(p.cwd_id or [0, 0])[1], dev=(p.cwd_id or [0, 0])[0])
            try:
                dfd = self._same_file(f, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, e)
            except OSError as e2:
                raise RestoreError(f"cannot enter the working directory {cwd} as uid {creds_of(p.creds)[0]}: "
                                   f"{e2.strerror}") from None
        except OSError as e:
            raise RestoreError(f"cannot enter the working directory {cwd}: {e.strerror}") from None
        try:
            tfd = self.give_fd(dfd)
        finally:
            os.close(dfd)
        t.call(f"fchdir({cwd})", sc.FCHDIR, tfd)
        t.call("close", sc.CLOSE, tfd)
        if p.personality:
            t.syscall(sc.PERSONALITY, p.personality)

    def set_rlimits(self) -> None:
        """After the fds and the threads: a limit lowered below what the
        process already holds (RLIMIT_NOFILE under its highest fd, say) is
        legal, but would refuse the restorer's own pidfd_getfd or clone3."""
        for r, (soft, hard) in self.p.rlimits.items():
            try:
                resource.prlimit(self.s, int(r), (soft, hard))
            except (OSError, ValueError) as e:
                self.notes.append(f"rlimit {r} not restored ({e})")

    def restore_fds(self):
        p, t = self.p, self.t
        if not p.fds:
            return
        # park our pidfd above every fd the process uses
        top = max(f.fd for f in p.fds) + 1
        if self.pidfd < top:
            nfd = t.call("fcntl(F_DUPFD_CLOEXEC)", sc.FCNTL, self.pidfd, 1030, top)
            t.call("close", sc.CLOSE, self.pidfd)
            self.pidfd = nfd
        for f in sorted(p.fds, key=lambda f: f.fd):
            got = self.give_fd(self.open_file(f.file))
            if got != f.fd:
                t.call(f"dup3 to fd {f.fd}", sc.DUP3, got, f.fd, sc.O_CLOEXEC if f.cloexec else 0)
                t.call("close", sc.CLOSE, got)
            elif not f.cloexec:  # pidfd_getfd sets FD_CLOEXEC
                t.call("fcntl(F_SETFD)", sc.FCNTL, f.fd, sc.F_SETFD, 0)
        try:
            fdkinds.after_fds(self)  # epoll watches need their target fds
        except fdkinds.Failed as e:
            raise RestoreError(f"cannot restore {e}") from None
        self.restore_locks()

    def restore_locks(self):
        """Take the file locks back, in the process itself (a POSIX lock
        belongs to the process that sets it): F_SETLK, F_OFD_SETLK, flock."""
        t = self.t
        for lk in self.p.locks:
            what = f"{lk['kind']} lock on fd {lk['fd']}"
            if lk["kind"] == "flock":
                r = t.syscall(sc.FLOCK, lk["fd"], (sc.LOCK_EX if lk["write"] else sc.LOCK_SH) | sc.LOCK_NB)
            else:
                ln = 0 if lk["end"] < 0 else lk["end"] - lk["start"] + 1
                fl = struct.pack("<hh4xqqi4x", sc.F_WRLCK if lk["write"] else sc.F_RDLCK, os.SEEK_SET,
                                 lk["start"], ln, 0)
                cmd = sc.F_SETLK if lk["kind"] == "posix" else sc.F_OFD_SETLK
                r = t.syscall(sc.FCNTL, lk["fd"], cmd, t.put(0, fl))
            if r < 0:
                raise RestoreError(f"PID {self.p.pid}: cannot take back its {what} "
                                   f"({lk['start']}-{'EOF' if lk['end'] < 0 else lk['end']}): {os.strerror(-r)}"
                                   + (" (another process holds it now)" if -r in (11, 13) else ""))

    def create_threads(self):
        t = self.t
        for th in self.p.threads[1:]:
            settid = t.put(256, struct.pack("<i", th.tid))
            args = struct.pack("<11Q", sc.THREAD_FLAGS, 0, 0, 0, 0, 0, 0, 0, settid, 1, 0)
            got = t.call(f"clone3(set_tid={th.tid})", sc.CLONE3, t.put(0, args), len(args))
            if got != th.tid:
                raise RestoreError(f"thread got TID {got} instead of {th.tid}")
            self.outer[th.tid] = t.last_new_thread() or got  # PTRACE_GETEVENTMSG: the TID we see
            status = ffi.new("int *")
            engine.check(lib.snp_wait_stop(self.outer[th.tid], status), f"wait for new thread {th.tid}")

    def set_sched(self, th):
        """CPU affinity, nice and scheduling policy of one thread, from
        outside (sched_setaffinity(2), setpriority(2), sched_setscheduler(2))."""
        s, tid = th.sched, self.outer[th.tid]
        if not s:
            return
        try:
            os.sched_setaffinity(tid, s["affinity"])
        except OSError as e:
            raise RestoreError(f"PID {self.p.pid} thread {th.tid} ran on CPUs {s['affinity']}, which this machine "
                               f"cannot give it: {e.strerror}") from None
        try:
            os.sched_setscheduler(tid, s["policy"], os.sched_param(s["priority"]))
            os.setpriority(os.PRIO_PROCESS, tid, s["nice"])
        except OSError as e:
            raise RestoreError(f"PID {self.p.pid} thread {th.tid}: cannot set its scheduling policy {s['policy']} "
                               f"and nice {s['nice']}: {e.strerror}") from None

    def set_oom_score_adj(self):
        """/proc/PID/oom_score_adj, from outside (lowering it below 0 needs
        CAP_SYS_RESOURCE: refused then, with the reason)."""
        want = self.p.oom_score_adj
        path = f"/proc/{self.s}/oom_score_adj"
        if int(procfs.read_bytes(path)) == want:
            return
        try:
            with open(path, "w") as f:
                f.write(str(want))
        except OSError as e:
            raise RestoreError(f"PID {self.p.pid}: cannot set its oom_score_adj back to {want}: {e.strerror}") from None

    def thread_state(self, th):
        self.set_sched(th)
        t, tid = self.t, self.outer[th.tid]
        if th.tid_address:
            t.call("set_tid_address", sc.SET_TID_ADDRESS, th.tid_address, tid=tid)
        head, ln = th.robust_list
        if head:
            t.call("set_robust_list", sc.SET_ROBUST_LIST, head, ln, tid=tid)
        if th.rseq:
            r = th.rseq
            t.call("rseq", sc.RSEQ, r["ptr"], r["len"], 0, r["sig"], tid=tid)
        t.call("PR_SET_NAME", sc.PRCTL, sc.PR_SET_NAME, t.put(0, th.comm.encode()[:15] + b"\0"), tid=tid)
        sp, flags, size = th.sigaltstack
        if not flags & 2:  # SS_DISABLE
            t.call("sigaltstack", sc.SIGALTSTACK, t.put(0, struct.pack("<QiiQ", sp, flags & ~1, 0, size)), 0, tid=tid)
        for info in th.pending:
            sig = struct.unpack_from("<i", info)[0]
            t.call("rt_tgsigqueueinfo", sc.RT_TGSIGQUEUEINFO, self.p.pid, th.tid, sig, t.put(0, info), tid=tid)

    def set_creds(self, tid: int):
        """Credentials of one thread (each is per thread): the bounding set
        first (dropping needs CAP_SETPCAP, which a non-root uid loses), then
        groups, gids, uids (leaving uid 0 clears the capabilities,
        capabilities(7)), then the capability sets a uid-0 thread keeps, the
        ambient set, and no-new-privs, as dumped."""
        c, t = self.p.creds, self.t
        uid, gid = c["uid"], c["gid"]
        caps = {k: int(str(v), 16) for k, v in (c.get("caps") or {}).items()}
        if "CapBnd" in caps:
            for cap in range(_cap_last_cap() + 1):
                if not caps["CapBnd"] >> cap & 1:
                    t.call("PR_CAPBSET_DROP", sc.PRCTL, sc.PR_CAPBSET_DROP, cap, tid=tid)
        if not (uid[:3] == [0, 0, 0] and gid[:3] == [0, 0, 0] and not c["groups"]):
            groups = c["groups"]
            t.call("setgroups", sc.SETGROUPS, len(groups), t.put(0, struct.pack(f"<{len(groups)}I", *groups)),
                   tid=tid)
            t.call("setresgid", sc.SETRESGID, *gid[:3], tid=tid)
            t.call("setresuid", sc.SETRESUID, *uid[:3], tid=tid)
        if 0 in uid[:3] and {"CapEff", "CapPrm", "CapInh"} <= caps.keys():
            data = struct.pack("<6I", *(x for k in (0, 32) for x in (caps["CapEff"] >> k & 0xFFFFFFFF,
                                                                     caps["CapPrm"] >> k & 0xFFFFFFFF,
                                                                     caps["CapInh"] >> k & 0xFFFFFFFF)))
            hdr = t.put(0, struct.pack("<Ii", sc.LINUX_CAPABILITY_VERSION_3, 0))
            t.call("capset", sc.CAPSET, hdr, t.put(64, data), tid=tid)
            for cap in range(64):
                if caps.get("CapAmb", 0) >> cap & 1:
                    t.call("PR_CAP_AMBIENT_RAISE", sc.PRCTL, sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, cap, 0, 0,
                           tid=tid)
        if c.get("no_new_privs"):
            t.call("PR_SET_NO_NEW_PRIVS", sc.PRCTL, sc.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, tid=tid)

    def finish(self):
        p, t = self.p, self.t
        for info in p.shared_pending:
            sig = struct.unpack_from("<i", info)[0]
            t.call("rt_sigqueueinfo", sc.RT_SIGQUEUEINFO, p.pid, sig, t.put(0, info))
        if self.pidfd >= 0:
            t.call("close pidfd", sc.CLOSE, self.pidfd)
            self.pidfd = -1
        for th in p.threads:
            self.set_creds(self.outer[th.tid])
        if p.subreaper:
            t.call("PR_SET_CHILD_SUBREAPER", sc.PRCTL, sc.PR_SET_CHILD_SUBREAPER, 1)
        # after the uid change, which resets it (to suid_dumpable)
        t.call("PR_SET_DUMPABLE", sc.PRCTL, sc.PR_SET_DUMPABLE, p.creds.get("dumpable", 1))
        # the main thread unmaps the scratch area it runs in (inject.py)
        try:
            self.remote.cure_from_inside()
        except inject.InjectError as e:
            raise RestoreError(str(e)) from None
        for th in p.threads:
            tid = self.outer[th.tid]
            engine.setregs(tid, _fixup_restart(engine.Regs(th.regs)))
            engine.setxstate(tid, th.xstate)
            engine.setsigmask(tid, th.sigmask)

    def build(self) -> None:
        """Everything but letting it run: on return every thread is stopped
        with its dumped registers.  On failure the caller kills the tree."""
        try:
            self.setup_scratch()
            self.clear_stub()
            self.move_vdso()
            self.map_memory()
            self.set_mm()
            self.set_process_state()
            self.restore_fds()
            self.create_threads()
            for th in self.p.threads:
                self.thread_state(th)
            self.set_rlimits()
            self.set_oom_score_adj()
            self.finish()
        finally:
            for fd in self.rfds:
                if fd is not None:
                    os.close(fd)
            self.rfds = []

    def resume(self) -> None:
        for th in reversed(self.p.threads):
            engine.detach(self.outer[th.tid], 0)
