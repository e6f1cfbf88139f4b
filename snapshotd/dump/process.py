"""One frozen process's metadata: threads (registers, signal state), the
process-wide state only the process can tell (asked through syscalls injected
into it: kernel/inject.py), open files and fds, and mappings; its pages go
through pages.PageDumper."""
from __future__ import annotations

import os
import resource
import stat as statmod
import struct

from .. import fdkinds
from .._engine import lib
from ..fdkinds import sysvshm
from ..image import Fd, File, Mapping, Process, Thread
from ..kernel import engine, inject, procfs
from ..kernel import syscalls as sc
from ..kernel.fscreds import file_id
from ..kernel.procfs import vma_key
from ..faults import crashpoint
from . import refuse
from .pages import UFFD_VMFLAGS, PageDumper
from .stats import DumpError, DumpStats
from .tree import SharedPagesOnce

def _rlim(v: int) -> int:
    return resource.RLIM_INFINITY if v == 0xFFFFFFFFFFFFFFFF else v


def _mask(hexstr: str) -> int:
    return int(hexstr, 16)


def thread_sched(tid: int) -> dict:
    """How the scheduler treats one thread (sched_getaffinity(2),
    getpriority(2), sched_getscheduler(2): readable from outside)."""
    return {"affinity": sorted(os.sched_getaffinity(tid)), "nice": os.getpriority(os.PRIO_PROCESS, tid),
            "policy": os.sched_getscheduler(tid), "priority": os.sched_getparam(tid).sched_priority}


class ProcessDumper:
    """One frozen process: its metadata here, its pages through self.pages
    (pages.PageDumper)."""

    def __init__(self, pid: int, tids: list[int], writer, stats: DumpStats, shared_pages: SharedPagesOnce | None = None,
                 incremental: bool = False):
        self.pid = pid
        self.tids = tids
        self.writer = writer
        self.stats = stats
        self.pages = PageDumper(pid, writer, stats, shared_pages, incremental)
        self.vmflags_hint: dict | None = None  # VmFlags by VMA, read just before the freeze
        self.flags_used: dict = {}
        self.flags_guessed: set = set()  # keys of flags_used guessed from a neighbour
        self.remote: inject.Remote | None = None
        self.scratch_range = (0, 0)
        self.files: list[File] = []
        self.locks: list[dict] = []
        self.saved_content: set = set()

    # -- the scratch area in the target (kernel/inject.py) --
    @property
    def t(self) -> engine.Tracee:
        return self.remote.t

    def map_scratch(self):
        try:
            self.remote = inject.infect(self.pid)
        except inject.InjectError as e:
            raise DumpError(str(e)) from None
        self.pages.remote = self.remote
        self.scratch_range = (self.remote.base, self.remote.base + inject.SCRATCH_SIZE)
        crashpoint("dump-infected")

    def unmap_scratch(self):
        if self.remote is not None:
            self.remote.cure()
            self.remote = self.pages.remote = None

    def ask(self, what: str, nr: int, *args, size: int, tid: int | None = None) -> bytes:
        """Inject a syscall that writes `size` bytes to the scratch area (inject.ARG)."""
        return self.remote.ask(what, nr, *args, size=size, tid=tid)

    # -- threads --
    def dump_thread(self, tid: int) -> Thread:
        regs = engine.getregs(tid)
        tidaddr = struct.unpack("<Q", self.ask("PR_GET_TID_ADDRESS", sc.PRCTL, sc.PR_GET_TID_ADDRESS, inject.ARG, size=8, tid=tid))[0]
        raw = self.ask("sigaltstack", sc.SIGALTSTACK, 0, inject.ARG, size=24, tid=tid)
        ss_sp, ss_flags, ss_size = struct.unpack("<QixxxxQ", raw)
        st = procfs.status(self.pid, tid)
        pending = engine.peek_siginfo(tid, shared=False) if _mask(st.get("SigPnd", "0")) else []
        return Thread(
            tid=tid,
            regs=regs.raw(),
            xstate=engine.getxstate(tid),
            sigmask=engine.getsigmask(tid),
            comm=procfs.read_bytes(f"/proc/{self.pid}/task/{tid}/comm").decode(errors="replace").rstrip("\n"),
            tid_address=tidaddr,
            robust_list=engine.get_robust_list(tid),
            rseq=engine.get_rseq(tid),
            sigaltstack=(ss_sp, ss_flags, ss_size),
            pending=pending,
            sched=thread_sched(tid),
        )

    # -- process-wide state --
    def sigactions(self, st: dict) -> dict:
        out = {}
        wanted = _mask(st["SigCgt"]) | _mask(st["SigIgn"])
        for sig in range(1, sc.NSIG + 1):
            if sig in (sc.SIGKILL, sc.SIGSTOP) or not wanted & (1 << (sig - 1)):
                continue
            raw = self.ask("rt_sigaction", sc.RT_SIGACTION, sig, 0, inject.ARG, 8, size=32)
            out[str(sig)] = list(struct.unpack("<4Q", raw))
        return out

    def itimers(self) -> list:
        return [list(struct.unpack("<4q", self.ask("getitimer", sc.GETITIMER, w, inject.ARG, size=32))) for w in (0, 1, 2)]

    def rlimits(self) -> dict:
        # asked inside the target: prlimit64 on another process needs
        # CAP_SYS_RESOURCE unless the uids match, and root lacks it here
        out = {}
        for r in range(16):
            soft, hard = struct.unpack("<2Q", self.ask("prlimit64", sc.PRLIMIT64, 0, r, 0, inject.ARG, size=16))
            out[str(r)] = [_rlim(soft), _rlim(hard)]
        return out

    def mm(self, stf: list[str]) -> dict:
        f = lambda i: int(stf[i - 1])  # noqa: E731 - proc(5) numbering
        brk = self.t.syscall(sc.BRK, 0)
        return {
            "start_code": f(26), "end_code": f(27), "start_stack": f(28),
            "start_data": f(45), "end_data": f(46), "start_brk": f(47), "brk": brk,
            "arg_start": f(48), "arg_end": f(49), "env_start": f(50), "env_end": f(51),
            "auxv": procfs.read_bytes(f"/proc/{self.pid}/auxv"),
        }

    def creds(self, st: dict) -> dict:
        return {
            "uid": [int(x) for x in st["Uid"].split()],
            "gid": [int(x) for x in st["Gid"].split()],
            "groups": [int(x) for x in st.get("Groups", "").split()],
            "caps": {k: st.get(k, "0") for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
            "no_new_privs": int(st.get("NoNewPrivs", "0")),
            "dumpable": self.t.call("PR_GET_DUMPABLE", sc.PRCTL, sc.PR_GET_DUMPABLE),
        }

    # -- files --
    def _file_for(self, procpath: str, link: str, flags: int, pos: int, kind_hint: str | None = None,
                  fd: int | None = None) -> int:
        """Index of a File record for the object behind procpath."""
        where = f"PID {self.pid}" if fd is None else f"PID {self.pid} fd {fd}"
        try:
            s = os.stat(procpath)
        except OSError as e:
            raise DumpError(f"{where}: cannot stat {link}: {e.strerror}") from None
        deleted = link.endswith(" (deleted)")
        path = link[: -len(" (deleted)")] if deleted else link
        if statmod.S_ISREG(s.st_mode):
            kind = "memfd" if path.startswith("/memfd:") else "reg"
        elif statmod.S_ISDIR(s.st_mode):
            kind = "dir"
            if deleted or s.st_nlink == 0:
                raise DumpError(f"{where}: {path} is a removed directory, still open: not restored yet")
        elif statmod.S_ISCHR(s.st_mode):
            kind = "chr"
        elif statmod.S_ISFIFO(s.st_mode):
            # a named pipe has a path; tree.capture_pipes turns pipes with both
            # ends in the tree into "pipe"
            kind = "fifo" if path.startswith("/") else "pipe-ext"
        else:
            raise DumpError(f"{where}: {link} ({_TYPE_NAMES.get(statmod.S_IFMT(s.st_mode), 'unknown type')}) is not supported")
        f = File(kind=kind, path=path, flags=flags, pos=pos, deleted=deleted or s.st_nlink == 0 and kind == "reg",
                 size=s.st_size, mode=statmod.S_IMODE(s.st_mode), inode=s.st_ino, dev=s.st_dev,
                 mtime_ns=s.st_mtime_ns if kind == "reg" else 0)
        if kind == "memfd" or (kind == "reg" and (f.deleted or _on_tmpfs(path))):
            key = f"{s.st_dev}:{s.st_ino}"
            if key not in self.saved_content:
                with open(procpath, "rb") as fh:
                    self.writer.add_file(key, fh.read())
                self.saved_content.add(key)
            f.content = key
        self.files.append(f)
        return len(self.files) - 1

    def dump_fds(self) -> list[Fd]:
        out: list[Fd] = []
        fd_locks: dict[int, list] = {}  # fd -> its fdinfo lock lines
        seen: list[tuple[int, int]] = []  # (fd, file index) of earlier fds, for kcmp
        kinds = fdkinds.DumpContext(self.pid)  # sockets, event fds: snapshotd/fdkinds/
        try:
            for fd in procfs.fds(self.pid):
                link = procfs.readlink(f"/proc/{self.pid}/fd/{fd}")
                info = procfs.fdinfo(self.pid, fd)
                fd_locks[fd] = info["locks"]
                flags = int(info["flags"], 8)
                same = next((fi for ofd, fi in seen if lib.snp_kcmp(self.pid, self.pid, sc.KCMP_FILE, ofd, fd) == 0), None)
                if same is None and fdkinds.is_plain(link):
                    same = self._file_for(f"/proc/{self.pid}/fd/{fd}", link, flags & ~sc.O_CLOEXEC, int(info.get("pos", 0)),
                                          fd=fd)
                elif same is None:
                    kind, state = kinds.dump(fd, link)
                    self.files.append(File(kind=kind, path=link, flags=flags & ~sc.O_CLOEXEC, state=state))
                    same = len(self.files) - 1
                seen.append((fd, same))
                out.append(Fd(fd=fd, file=same, cloexec=bool(flags & sc.O_CLOEXEC)))
            kinds.finish()
        except fdkinds.Unsupported as e:
            raise DumpError(str(e)) from None
        finally:
            kinds.close()
        self.locks = self.dump_locks(out, fd_locks)
        return out

    def dump_locks(self, fds: list[Fd], fd_locks: dict[int, list]) -> list[dict]:
        """The file locks the process holds (fdinfo "lock:" lines): POSIX
        ones per process, OFD and flock ones per open file description;
        leases and anything else are refused (not restored)."""
        out, seen = [], set()
        for f in fds:
            for ln in fd_locks[f.fd]:
                cls = ln[1] if len(ln) > 1 else "?"
                if cls not in ("POSIX", "OFDLCK", "FLOCK") or len(ln) < 8 or ln[2] != "ADVISORY":
                    raise DumpError(f"PID {self.pid} fd {f.fd}: a {' '.join(ln[1:4]).lower()} lock is not "
                                    "supported")
                kind = {"POSIX": "posix", "OFDLCK": "ofd", "FLOCK": "flock"}[cls]
                start, end = int(ln[6]), -1 if ln[7] == "EOF" else int(ln[7])
                key = (kind, ln[5], start, end) if kind == "posix" else (kind, f.file, start, end)
                if key in seen:
                    continue  # the same lock seen through another fd of the file
                seen.add(key)
                out.append({"fd": f.fd, "kind": kind, "write": ln[3] == "WRITE", "start": start, "end": end})
        return out

    # -- memory --
    def _maps(self) -> list[procfs.MapLine]:
        """The mappings with their VmFlags.  /proc/PID/smaps walks every page
        to count Rss (~60 ms per 4 GiB), so while frozen we read the cheap
        /proc/PID/maps and take VmFlags from the smaps read just before the
        freeze (`vmflags_hint`) for mappings with the same bounds; if any
        mapping is new, smaps is read now.  dump() checks after resume that
        the flags did not change meanwhile."""
        if self.vmflags_hint is None:
            return procfs.maps(self.pid)
        maps = procfs.maps(self.pid, with_flags=False)
        self.flags_guessed = set()
        for i, m in enumerate(maps):
            if (m.start, m.end) == self.scratch_range:
                continue  # ours, cut out by dump_mappings
            f = self.vmflags_hint.get(vma_key(m))
            if f is None:
                f = self._guess_vmflags(maps, i)
                if f is None:
                    return procfs.maps(self.pid)
                self.flags_guessed.add(vma_key(m))
            m.vmflags = f
        self.flags_used = {vma_key(m): m.vmflags for m in maps if (m.start, m.end) != self.scratch_range}
        return maps

    def _guess_vmflags(self, maps: list, i: int):
        """VmFlags for a mapping new since the hint was read, from the one it
        continues: same file or kind, same permissions, adjacent, and kept
        apart from it only by the tracker's userfaultfd registration (a heap
        grown by brk, an arena extended), so with the same flags but those.
        Any other adjacent pair would have merged unless its flags differ:
        None then, and smaps is read while frozen (~12 ms per GiB of the
        process).  The check after the release verifies every guess."""
        m = maps[i]
        for j in (i - 1, i + 1):
            if not 0 <= j < len(maps):
                continue
            n = maps[j]
            if (n.end == m.start or m.end == n.start) and (n.perms, n.inode, n.path) == (m.perms, m.inode, m.path):
                f = self.vmflags_hint.get(vma_key(n))
                if f is not None and UFFD_VMFLAGS & set(f):
                    return tuple(x for x in f if x not in UFFD_VMFLAGS)
        return None

    def dump_mappings(self) -> list[Mapping]:
        out = []
        lo, hi = self.scratch_range
        for m in self._maps():
            if m.end <= lo or m.start >= hi:
                parts = [(m.start, m.end)]
            else:  # the scratch page (possibly merged with a neighbour): cut it out
                parts = [(a, b) for a, b in ((m.start, lo), (hi, m.end)) if a < b]
            for a, b in parts:
                mp = self.mapping(m, a, b)
                if mp:
                    out.append(mp)
        return out

    def mapping(self, m: procfs.MapLine, start: int, end: int) -> Mapping | None:
        if m.path == "[vsyscall]":
            return None  # same fixed address in every process
        prot = (sc.PROT_READ if m.perms[0] == "r" else 0) | (sc.PROT_WRITE if m.perms[1] == "w" else 0) \
            | (sc.PROT_EXEC if m.perms[2] == "x" else 0)
        shared = m.perms[3] == "s"
        mp = Mapping(start=start, end=end, prot=prot, shared=shared, offset=m.offset + (start - m.start),
                     path=m.path, vmflags=list(m.vmflags))
        if m.path in procfs.SPECIAL_MAPS:
            mp.pages = "none"
        elif m.inode == 0 or m.path.startswith("/dev/zero") or m.path.startswith("/SYSV"):
            if m.path.startswith("/SYSV"):
                try:
                    mp.sysv = sysvshm.dump_mapping(self, m, start, end)
                except fdkinds.Unsupported as e:
                    raise DumpError(str(e)) from None
                mp.pages = "sysv"
                return mp
            mp.pages = "anon"  # private anon, heap, stack, or shared anonymous
            if shared:
                mp.shmem = os.stat(f"/proc/{self.pid}/map_files/{m.start:x}-{m.end:x}").st_ino
        else:
            procpath = f"/proc/{self.pid}/map_files/{m.start:x}-{m.end:x}"
            link = procfs.readlink(procpath)
            flags = os.O_RDWR if (shared and prot & sc.PROT_WRITE) else os.O_RDONLY
            mp.file = self._file_for(procpath, link, flags, 0)
            mp.pages = "file" if shared else "cow"
        return mp

    def dump_meta(self) -> Process:
        """Everything but page contents (the scratch page must be mapped)."""
        pid = self.pid
        st = procfs.status(pid)
        stf = procfs.stat_fields(pid)
        threads = [self.dump_thread(t) for t in self.tids]
        cwd = procfs.readlink(f"/proc/{pid}/cwd")
        refuse.check_process(pid, self.tids, self.remote, st, cwd)
        proc = Process(
            pid=pid, ppid=int(stf[3]), pgid=int(stf[4]), sid=int(stf[5]), comm=stf[1],
            exe=procfs.readlink(f"/proc/{pid}/exe"), cwd=cwd, cwd_id=file_id(f"/proc/{pid}/cwd"),
            umask=int(st.get("Umask", "0022"), 8), creds=self.creds(st),
            rlimits=self.rlimits(),
            mm=self.mm(stf), sigactions=self.sigactions(st), itimers=self.itimers(),
            personality=int(procfs.read_bytes(f"/proc/{pid}/personality"), 16),
            threads=threads, mappings=[], files=self.files, fds=[],
            shared_pending=engine.peek_siginfo(pid, shared=True) if _mask(st.get("ShdPnd", "0")) else [],
        )
        proc.subreaper = bool(struct.unpack("<i", self.ask("PR_GET_CHILD_SUBREAPER", sc.PRCTL, sc.PR_GET_CHILD_SUBREAPER,
                                                           inject.ARG, size=4))[0])
        proc.fds = self.dump_fds()
        proc.locks = self.locks
        proc.exe_file = self._file_for(f"/proc/{pid}/exe", proc.exe, os.O_RDONLY, 0)
        proc.mappings = self.dump_mappings()
        refuse.check_mappings(pid, proc.mappings)
        proc.oom_score_adj = int(procfs.read_bytes(f"/proc/{pid}/oom_score_adj"))
        return proc

    def dump(self) -> Process:
        """A whole process while frozen: metadata, then every page."""
        self.map_scratch()
        try:
            proc = self.dump_meta()
        finally:
            self.unmap_scratch()
        self.pages.dump_pages(proc.mappings)
        return proc


_TYPE_NAMES = {statmod.S_IFSOCK: "socket", statmod.S_IFBLK: "block device", statmod.S_IFLNK: "symlink"}

_mounts: list = []


def _on_tmpfs(path: str) -> bool:
    """Whether a path lies on tmpfs or ramfs: their contents do not survive a
    reboot, so a snapshot saves them."""
    if not _mounts:
        with open("/proc/self/mounts") as f:
            for line in f:
                _dev, mnt, fstype = line.split()[:3]
                _mounts.append((mnt.replace("\\040", " "), fstype))
    best = max((m for m in _mounts if path == m[0] or path.startswith(m[0].rstrip("/") + "/")),
               key=lambda m: len(m[0]), default=None)
    return best is not None and best[1] in ("tmpfs", "ramfs")
