"""Dump: freeze a process tree, capture it into an Image plus its pages, let it run on.

tree.py finds and freezes every descendant; each live process is dumped here,
one after the other, all staying frozen until the whole tree is captured.

Order while frozen (every thread ptrace-stopped):
  1. map a scratch page in the target (syscall injected at its rip) for the
     syscalls that only the process itself can answer (PR_GET_TID_ADDRESS,
     brk(0), rt_sigaction, sigaltstack, getitimer);
  2. read threads, process state, open files, mappings from /proc and ptrace;
  3. read pages (pagemap + process_vm_readv) straight into the snapshot writer;
  4. unmap the scratch page and resume every thread with its registers intact.
The snapshot is committed (fsync + rename) after the process runs again.
"""
from __future__ import annotations

import contextlib
import os
import resource
import signal
import stat as statmod
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..kernel import engine, netns, procfs
from .. import fdkinds
from ..kernel.procfs import vma_key, vmflags_by_vma
from ..fdkinds import sysvshm
from ..kernel import syscalls as sc
from .._engine import lib
from . import childcopy
from .cow import fork_held_child, needs_frozen_read, release_child
from ..incremental import TreeTracker, ranges_and, ranges_minus
from ..incremental.uffd import PAGE_IS_PRESENT, PAGE_IS_SWAPPED, hole_regions, scan_regions
from ..pagehash import hash_pages, nonzero_mask, nonzero_rows
from .pageread import PAGES_PER_READ, PageReader, give_back_when_done, note_lent, prewarm_lent_buffers, take_lent_buffer
from ..kernel.fscreds import file_id
from ..progress import Progress
from ..image import Fd, File, Image, Mapping, Process, Thread, to_dict
from ..storage.store import Store
from .tree import FrozenTree, SharedPagesOnce, TreeError, capture_pipes, link_shared_files, zombie_record

SCRATCH_SIZE = 64 * 1024
O_CLOEXEC = 0o2000000
KCMP_FILE = 0
SPECIAL_MAPS = ("[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[uprobes]")


class DumpError(Exception):
    pass


@dataclass
class DumpStats:
    frozen_s: float = 0.0
    wall_s: float = 0.0
    pages: int = 0
    stored_bytes: int = 0
    resident_bytes: int = 0
    pids: list = field(default_factory=list)  # the tree's processes, root first
    notes: list = field(default_factory=list)
    tracker: str = ""  # how changed pages were found: "uffd-wp", "soft-dirty", "hash", "none" (full)
    capture: str = ""  # "cow" or "frozen" (what "auto" chose)
    dirty_pages: int = 0  # pages the tracker reported written (and present)
    unchanged_pages: int = 0  # pages the tracker declared unchanged since the parent
    new_pages: int = 0  # page contents the store did not hold yet (stored by this dump)


def validate_target(pid: int) -> None:
    if pid <= 0 or not os.path.exists(f"/proc/{pid}"):
        raise DumpError(f"no process with PID {pid}")
    try:
        st = procfs.stat_fields(pid)
    except procfs.ProcGone:
        raise DumpError(f"no process with PID {pid}") from None
    if int(st[8]) & procfs.PF_KTHREAD:
        raise DumpError(f"PID {pid} ({st[1]}) is a kernel thread and cannot be snapshotted")
    if st[2] in ("Z", "X"):
        raise DumpError(f"PID {pid} ({st[1]}) is a zombie (it has exited)")
    if pid == os.getpid() or pid in procfs.ancestors(os.getpid()):
        raise DumpError(f"PID {pid} is snapshotd itself or one of its ancestors")
    if int(st[0]) != pid or not os.path.isdir(f"/proc/{pid}/task/{pid}"):
        raise DumpError(f"PID {pid} is a thread, not a process; dump its process {procfs.status(pid).get('Tgid')}")


class Frozen:
    """Every thread of a process ptrace-stopped (PTRACE_SEIZE + INTERRUPT),
    repeated until no new thread appears."""

    def __init__(self, pid: int):
        self.pid = pid
        self.tids: list[int] = []

    def __enter__(self):
        seen: set[int] = set()
        try:
            while True:
                new = [t for t in procfs.tids(self.pid) if t not in seen]
                if not new:
                    break
                for t in new:
                    try:
                        engine.seize(t)
                    except engine.EngineError as e:
                        if e.errno == 3 and t != self.pid:  # ESRCH: thread exited meanwhile
                            seen.add(t)
                            continue
                        raise
                    seen.add(t)
                    self.tids.append(t)
        except (engine.EngineError, procfs.ProcGone) as e:
            self.release()
            raise DumpError(f"cannot freeze PID {self.pid}: {e}") from None
        self.tids = [t for t in self.tids if os.path.exists(f"/proc/{self.pid}/task/{t}")]
        self.tids.sort(key=lambda t: (t != self.pid, t))
        return self

    def release(self):
        for t in self.tids:
            try:
                engine.detach(t)
            except engine.EngineError:
                pass
        self.tids = []

    def __exit__(self, *exc):
        self.release()


def _rlim(v: int) -> int:
    return resource.RLIM_INFINITY if v == 0xFFFFFFFFFFFFFFFF else v


def _mask(hexstr: str) -> int:
    return int(hexstr, 16)


class ProcessDumper:
    def __init__(self, pid: int, tids: list[int], writer, stats: DumpStats, shared_pages: SharedPagesOnce | None = None,
                 incremental: bool = False):
        self.pid = pid
        self.incremental = incremental  # the writer has a parent snapshot of this process
        self.deferred: list = []  # pages read while frozen (copies), stored after the process runs again
        self.deferred_lent: list = []  # (addrs, data in a lent buffer, anon): written pages read while frozen
        self.vmflags_hint: dict | None = None  # VmFlags by VMA, read just before the freeze
        self.flags_used: dict = {}
        self.lent: list = []  # buffers lent to the writer for pages copied while frozen
        self.lent_used = self.lent_pages = 0
        self.flags_guessed: set = set()  # keys of flags_used guessed from a neighbour
        self.shared_pages = shared_pages or SharedPagesOnce()
        self.tids = tids
        self.writer = writer
        self.stats = stats
        self.t = engine.Tracee(pid)
        self.files: list[File] = []
        self.file_keys: dict = {}
        self.saved_content: set = set()

    # -- scratch area in the target --
    def map_scratch(self):
        prot = sc.PROT_READ | sc.PROT_WRITE | sc.PROT_EXEC
        addr = self.t.inject_at_rip(sc.MMAP, 0, SCRATCH_SIZE, prot, sc.MAP_PRIVATE | sc.MAP_ANONYMOUS, -1, 0)
        if -4096 < addr < 0:
            raise DumpError(f"cannot map a scratch page in PID {self.pid}: {os.strerror(-addr)}")
        engine.mem_write(self.pid, addr, engine.SYSCALL_INT3)
        self.t.code, self.t.scratch, self.t.scratch_size = addr, addr + 64, SCRATCH_SIZE - 64
        self.scratch_range = (addr, addr + SCRATCH_SIZE)

    def unmap_scratch(self):
        if self.t.code:
            self.t.inject_at_rip(sc.MUNMAP, self.scratch_range[0], SCRATCH_SIZE)
            self.t.code = 0

    def ask(self, what: str, nr: int, *args, size: int, tid: int | None = None) -> bytes:
        """Inject a syscall that writes `size` bytes to the scratch area."""
        self.t.call(what, nr, *[self.t.scratch if a is SCRATCH else a for a in args], tid=tid)
        return self.t.get(0, size)

    # -- threads --
    def dump_thread(self, tid: int) -> Thread:
        regs = engine.getregs(tid)
        tidaddr = struct.unpack("<Q", self.ask("PR_GET_TID_ADDRESS", sc.PRCTL, sc.PR_GET_TID_ADDRESS, SCRATCH, size=8, tid=tid))[0]
        raw = self.ask("sigaltstack", sc.SIGALTSTACK, 0, SCRATCH, size=24, tid=tid)
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
        )

    # -- process-wide state --
    def sigactions(self, st: dict) -> dict:
        out = {}
        wanted = _mask(st["SigCgt"]) | _mask(st["SigIgn"])
        for sig in range(1, sc.NSIG + 1):
            if sig in (sc.SIGKILL, sc.SIGSTOP) or not wanted & (1 << (sig - 1)):
                continue
            raw = self.ask("rt_sigaction", sc.RT_SIGACTION, sig, 0, SCRATCH, 8, size=32)
            out[str(sig)] = list(struct.unpack("<4Q", raw))
        return out

    def itimers(self) -> list:
        return [list(struct.unpack("<4q", self.ask("getitimer", sc.GETITIMER, w, SCRATCH, size=32))) for w in (0, 1, 2)]

    def rlimits(self) -> dict:
        # asked inside the target: prlimit64 on another process needs
        # CAP_SYS_RESOURCE unless the uids match, and root lacks it here
        out = {}
        for r in range(16):
            soft, hard = struct.unpack("<2Q", self.ask("prlimit64", sc.PRLIMIT64, 0, r, 0, SCRATCH, size=16))
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
        elif statmod.S_ISCHR(s.st_mode):
            kind = "chr"
        elif statmod.S_ISFIFO(s.st_mode):
            # a named pipe has a path; tree.capture_pipes turns pipes with both
            # ends in the tree into "pipe"
            kind = "fifo" if path.startswith("/") else "pipe-ext"
        else:
            raise DumpError(f"{where}: {link} ({_TYPE_NAMES.get(statmod.S_IFMT(s.st_mode), 'unknown type')}) is not supported")
        f = File(kind=kind, path=path, flags=flags, pos=pos, deleted=deleted or s.st_nlink == 0 and kind == "reg",
                 size=s.st_size, mode=statmod.S_IMODE(s.st_mode), inode=s.st_ino, dev=s.st_dev)
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
        seen: list[tuple[int, int]] = []  # (fd, file index) of earlier fds, for kcmp
        kinds = fdkinds.DumpContext(self.pid)  # sockets, event fds: snapshotd/fdkinds/
        try:
            for fd in procfs.fds(self.pid):
                link = procfs.readlink(f"/proc/{self.pid}/fd/{fd}")
                info = procfs.fdinfo(self.pid, fd)
                flags = int(info["flags"], 8)
                same = next((fi for ofd, fi in seen if lib.snp_kcmp(self.pid, self.pid, KCMP_FILE, ofd, fd) == 0), None)
                if same is None and fdkinds.is_plain(link):
                    same = self._file_for(f"/proc/{self.pid}/fd/{fd}", link, flags & ~O_CLOEXEC, int(info.get("pos", 0)),
                                          fd=fd)
                elif same is None:
                    kind, state = kinds.dump(fd, link)
                    self.files.append(File(kind=kind, path=link, flags=flags & ~O_CLOEXEC, state=state))
                    same = len(self.files) - 1
                seen.append((fd, same))
                out.append(Fd(fd=fd, file=same, cloexec=bool(flags & O_CLOEXEC)))
            kinds.finish()
        except fdkinds.Unsupported as e:
            raise DumpError(str(e)) from None
        finally:
            kinds.close()
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
        if m.path in SPECIAL_MAPS:
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

    # -- pages --
    def plan_pages(self, mappings: list[Mapping], changes, capture: str) -> list[PagePlan]:
        """Decide, while frozen, how each mapping's pages are captured: which
        ranges are read in full (the store keeps only contents it does not
        hold yet: that is the hash comparison), which pages the tracker says were written (read) or not
        (declared unchanged).  PAGEMAP_SCAN is run on the frozen process, so
        the plan describes the moment of the freeze."""
        plans = []
        pmfd = -1
        try:
            for mp in mappings:
                if mp.pages not in ("anon", "cow"):
                    continue
                pl = PagePlan(mp, frozen=capture != "cow" or needs_frozen_read(mp.shared, mp.vmflags))
                whole = [(mp.start, mp.end)]
                tracked = [] if (changes is None or not self.incremental or mp.shared) else ranges_and(whole, changes.tracked)
                pl.full = ranges_minus(whole, tracked)
                if tracked:
                    if pmfd < 0:
                        pmfd = os.open(f"/proc/{self.pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
                    # while frozen only the kernel's answers are collected (runs of
                    # pages, cheap); page lists are made after the process runs again
                    w = changes.written
                    holes = [h for a, b in tracked for h in hole_regions(pmfd, a, b, mp.pages == "cow")]
                    pl.kept = ranges_minus(tracked, holes)
                    pl.written = np.concatenate([w[np.searchsorted(w, a) : np.searchsorted(w, b)] for a, b in tracked])
                plans.append(pl)
        finally:
            if pmfd >= 0:
                os.close(pmfd)
        return plans

    def pages_to_read(self, plans: list[PagePlan]) -> int:
        """Pages a frozen capture would read: written pages, plus the present
        pages of the ranges read in full (PAGEMAP_SCAN: cheap)."""
        n = sum(len(pl.written) for pl in plans)
        ps = PAGE_IS_PRESENT | PAGE_IS_SWAPPED
        pmfd = os.open(f"/proc/{self.pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        try:
            for pl in plans:
                for a, b in pl.full:
                    r = scan_regions(pmfd, a, b, 0, 0, 0, ps)
                    n += int(((r[:, 1] - r[:, 0]) // engine.PAGE).sum()) if len(r) else 0
                    if n > AUTO_FROZEN_MAX_PAGES:
                        return n
        finally:
            os.close(pmfd)
        return n

    def flush_deferred(self) -> None:
        """Store the pages copied while frozen (those in lent buffers are
        hashed only now: zero pages of anonymous memory are dropped then)."""
        for args, kw in self.deferred:
            self.writer.add_pages(self.pid, *args, **kw, borrow=True)
        for addrs, data, anon in self.deferred_lent:
            hashes = hash_pages(data)
            rows = nonzero_rows(hashes) if anon else None
            self.stats.pages += len(addrs) if rows is None else len(rows)
            self.writer.add_pages(self.pid, addrs, data, hashes, rows=rows, borrow=True)
        give_back_when_done(self.writer.take_borrowed(), self.lent)
        note_lent(self.lent_pages)
        self.deferred, self.deferred_lent, self.lent, self.lent_pages = [], [], [], 0

    def capture_pages(self, plans: list[PagePlan], source: int, frozen: bool, defer: bool = False) -> None:
        """Read the pages of the plans whose `frozen` flag matches, from
        process `source` (the dumped process itself, or its copy-on-write
        child), into the writer, through reused buffers (fresh memory is slow
        to fault in on this kind of VM).  Full ranges are found with
        /proc/PID/pagemap; the engine hashes while reading, zero pages come
        back with an all-zero hash and are dropped (except in file-backed
        private mappings, where a missing page would read back from the file).
        The copy-on-write child copies its readable pages itself (childcopy.py)
        unless it refuses."""
        plans = [p for p in plans if p.frozen == frozen]
        if not plans:
            return
        # progress by address range scanned (sparse areas pass quickly)
        bar = Progress(f"dump {self.pid}", sum(b - a for p in plans for a, b in p.full))
        copier = self._child_copier(source) if source != self.pid and any(p.full for p in plans) else None
        try:
            with PageReader(source, self.pid) as reader:
                for pl in plans:
                    self._capture_plan(pl, reader, source, bar, defer, copier)
        finally:
            bar.close()
            if copier is not None:
                copier.close()
                if copier.broken:
                    self.stats.notes.append(f"PID {self.pid}: {copier.broken}; read through /proc/{source}/mem")

    def _child_copier(self, child: int) -> childcopy.ChildCopier | None:
        if not childcopy.enabled():
            return None
        try:
            return childcopy.ChildCopier(child, self.pid, self.t.code, self.t.scratch, self.t.scratch_size)
        except (engine.EngineError, OSError) as e:
            self.stats.notes.append(f"the copy-on-write child of PID {self.pid} could not copy its pages itself "
                                    f"({e}): read through /proc/{child}/mem")
            return None

    def _read_flags(self, mp: Mapping, source: int) -> int:
        """snp_collect_pages flags for mapping mp read from process source."""
        flags = 0
        if mp.pages == "cow":
            flags |= lib.SNP_PAGES_ANON_ONLY
        if not mp.prot & sc.PROT_READ or source != self.pid:
            # process_vm_readv pins pages (FOLL_PIN), and pinning an anonymous
            # page shared with the COW child makes the kernel copy it first
            # ("unshare"): 3x slower, and memory doubles.  /proc/PID/mem
            # takes plain references and copies nothing.
            flags |= lib.SNP_PAGES_USE_MEMFILE
        return flags

    def _add_batch(self, bt, mp: Mapping, defer: bool = False):
        """Hand a batch of read pages to the writer; returns (rows kept,
        their references, or None when deferred).  Zero pages come back
        with an all-zero hash and are dropped, except in file-backed private
        mappings ("cow"), where a missing page would read back from the file."""
        rows = nonzero_rows(bt.hashes) if mp.pages == "anon" else None
        self.stats.pages += bt.got if rows is None else len(rows)
        if defer:
            self._add_pages((bt.addrs, bt.data, bt.hashes), {"rows": rows}, True)
            return rows, None
        # lent, not copied: the reader reuses the buffer once the
        # compressions that read it are done
        refs = self.writer.add_pages(self.pid, bt.addrs, bt.data, bt.hashes, rows=rows, borrow=True)
        bt.hold(self.writer.take_borrowed())
        return rows, refs

    def _capture_plan(self, pl: "PagePlan", reader: PageReader, source: int, bar: Progress, defer: bool,
                      copier: childcopy.ChildCopier | None = None) -> None:
        mp = pl.mp
        flags = self._read_flags(mp, source)
        # not through the child: what it cannot read (PROT_NONE), and device
        # memory (VM_IO/VM_PFNMAP), where a load is not a plain read
        if copier is not None and mp.prot & sc.PROT_READ and not {"io", "pf"} & set(mp.vmflags):
            batches = copier.batches(reader, pl.full, flags)
        else:
            batches = reader.batches(pl.full, flags)
        with contextlib.closing(batches):  # on an error too: its buffers are idle before they are reused
            for bt in batches:
                if bt.got:
                    self._add_batch(bt, mp, defer)
                bar.add(bt.next - bt.start)
        buf = reader.bufs[0]  # free again
        n = reader.n
        for i in range(0, len(pl.written), n):
            w = pl.written[i : i + n]
            k = len(w)
            buf.addrs[:k] = w
            # frozen and deferred: read straight into buffers lent to the
            # writer, zero pages sorted out with the hashes once it runs again
            dst = self._lent_pages(k, n) if defer else buf.data
            reader.read_list(buf.c[0], dst, k, flags)
            self.stats.dirty_pages += k
            if defer:
                self.deferred_lent.append((w.copy(), dst[: k * engine.PAGE], mp.pages == "anon"))
                continue
            data = buf.data[: k * engine.PAGE]
            rows = None  # "cow": absent would mean "as in the file", so zero pages are kept
            if mp.pages == "anon":
                rows = np.flatnonzero(nonzero_mask(data))
            self._add_pages((buf.addrs[:k], data), {"rows": rows}, defer)
            self.stats.pages += k if rows is None else len(rows)

    def _lent_pages(self, k: int, n: int) -> np.ndarray:
        """Room for k (<= n) pages in the buffers lent to the writer: the
        written pages of all mappings fill them one after the other."""
        if not self.lent or self.lent_used + k > n:
            self.lent.append(take_lent_buffer(n))
            self.lent_used = 0
        a = self.lent_used * engine.PAGE
        self.lent_used += k
        self.lent_pages += k
        return self.lent[-1][a : a + k * engine.PAGE]

    def _add_pages(self, args: tuple, kw: dict, defer: bool) -> None:
        if defer:  # copies: the buffers are reused
            self.deferred.append((tuple(np.array(a) for a in args), kw))
        else:
            self.writer.add_pages(self.pid, *args, **kw)

    def add_unchanged(self, plans: list[PagePlan]) -> None:
        """Declare the pages the tracker found unchanged since the parent:
        those of the kept runs that were not written."""
        kept = [r for p in plans for r in p.kept]
        if not kept:
            return
        written = [p.written for p in plans if len(p.written)]
        written = np.concatenate(written) if written else np.empty(0, np.uint64)
        self.stats.unchanged_pages += self.writer.add_unchanged_runs(
            self.pid, np.asarray(kept, dtype=np.uint64).reshape(-1, 2), written)

    def dump_pages(self, mappings: list[Mapping]) -> None:
        """Stream the pages to keep into the writer (the tree path: pages
        that processes of the tree share copy-on-write are read once, through
        shared_pages).  Zero pages come back with an all-zero hash and are
        dropped, except in file-backed private mappings where a missing page
        would read back from the file."""
        n = PAGES_PER_READ
        # progress by address range scanned (sparse areas pass quickly)
        bar = Progress(f"dump {self.pid}", sum(m.end - m.start for m in mappings if m.pages in ("anon", "cow")))
        try:
            with PageReader(self.pid, self.pid) as reader:
                for mp in mappings:
                    if mp.pages not in ("anon", "cow"):
                        continue
                    flags = self._read_flags(mp, self.pid)
                    private = mp.pages == "anon" and not mp.shared
                    # windows of the mapping, so that pagemap reads stay small
                    windows = [(w, min(w + n * engine.PAGE, mp.end)) for w in range(mp.start, mp.end, n * engine.PAGE)] \
                        if private else [(mp.start, mp.end)]
                    for wlo, whi in windows:
                        if private:  # frames already captured from another process of the tree
                            kaddrs, krefs, todo, pfn = self.shared_pages.split_private(reader.pmfd, wlo, whi)
                            self.writer.add_refs(self.pid, kaddrs, krefs)
                            self.stats.pages += len(kaddrs)
                        else:
                            todo = self.shared_pages.ranges(reader.pmfd, mp)
                        bar.add((whi - wlo) - sum(hi - lo for lo, hi in todo))  # skipped: captured already
                        batches = reader.batches(todo, flags)
                        with contextlib.closing(batches):  # idle buffers before reader.close()
                            for bt in batches:
                                if bt.got:
                                    rows, refs = self._add_batch(bt, mp)
                                    if private:
                                        self.shared_pages.remember(pfn, wlo, bt.addrs, rows, refs)
                                bar.add(bt.next - bt.start)
        finally:
            bar.close()

    def dump_meta(self) -> Process:
        """Everything but page contents (the scratch page must be mapped)."""
        pid = self.pid
        st = procfs.status(pid)
        stf = procfs.stat_fields(pid)
        threads = [self.dump_thread(t) for t in self.tids]
        proc = Process(
            pid=pid, ppid=int(stf[3]), pgid=int(stf[4]), sid=int(stf[5]), comm=stf[1],
            exe=procfs.readlink(f"/proc/{pid}/exe"), cwd=procfs.readlink(f"/proc/{pid}/cwd"), cwd_id=file_id(f"/proc/{pid}/cwd"),
            umask=int(st.get("Umask", "0022"), 8), creds=self.creds(st),
            rlimits=self.rlimits(),
            mm=self.mm(stf), sigactions=self.sigactions(st), itimers=self.itimers(),
            personality=int(procfs.read_bytes(f"/proc/{pid}/personality"), 16),
            threads=threads, mappings=[], files=self.files, fds=[],
            shared_pending=engine.peek_siginfo(pid, shared=True) if _mask(st.get("ShdPnd", "0")) else [],
        )
        proc.subreaper = bool(struct.unpack("<i", self.ask("PR_GET_CHILD_SUBREAPER", sc.PRCTL, sc.PR_GET_CHILD_SUBREAPER,
                                                           SCRATCH, size=4))[0])
        proc.fds = self.dump_fds()
        proc.exe_file = self._file_for(f"/proc/{pid}/exe", proc.exe, os.O_RDONLY, 0)
        proc.mappings = self.dump_mappings()
        return proc

    def dump(self) -> Process:
        """A whole process while frozen: metadata, then every page."""
        self.map_scratch()
        try:
            proc = self.dump_meta()
        finally:
            self.unmap_scratch()
        self.dump_pages(proc.mappings)
        return proc


@dataclass
class PagePlan:
    """How one mapping's pages are captured (see ProcessDumper.plan_pages)."""

    mp: Mapping
    frozen: bool  # read while the process is frozen (a fork would not copy it)
    full: list = field(default_factory=list)  # (start, end) ranges read through pagemap
    written: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))  # read these pages
    kept: list = field(default_factory=list)  # (start, end) runs of private data pages: those not
    # written are unchanged since the parent


UFFD_VMFLAGS = {"uw", "um", "ui"}  # userfaultfd registration (a tracker's, set during the dump)


def check_vmflags_unchanged(pid: int, used: dict, guessed: set = frozenset()) -> tuple[dict, str | None]:
    """After resume: every mapping whose VmFlags were taken from before the
    freeze (or guessed) must show the same flags now (if it still exists
    unchanged), so the flags held during the freeze too.  Returns the flags
    read now and, if one differs, the error that fails the dump."""
    now = vmflags_by_vma(pid)
    for k, f in used.items():
        want = set(f) - UFFD_VMFLAGS
        g = now.get(k)
        if g is None and k in guessed:
            # it changed bounds since (merged, grown, cut): what covers its range now must agree
            cover = sorted((kk for kk in now if kk[0] < k[1] and kk[1] > k[0]), key=lambda kk: kk[0])
            pos = k[0]
            for kk in cover:
                if kk[0] > pos or set(now[kk]) - UFFD_VMFLAGS != want:
                    break
                pos = kk[1]
            if pos >= k[1]:
                continue
            return now, (f"PID {pid}: mapping {k[0]:#x}-{k[1]:#x} is new and its flags could not be verified "
                         "during the dump; nothing was saved, try again")
        if g is not None and set(g) - UFFD_VMFLAGS != want:
            why = "is new and its flags were guessed wrong" if k in guessed else "changed its flags (madvise)"
            return now, (f"PID {pid}: mapping {k[0]:#x}-{k[1]:#x} {why} during the dump; nothing was saved, "
                         "try again")
    return now, None

_TYPE_NAMES = {statmod.S_IFSOCK: "socket", statmod.S_IFBLK: "block device", statmod.S_IFLNK: "symlink"}

SCRATCH = object()  # placeholder argument: "the scratch area's address"

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


CAPTURES = ("auto", "cow", "frozen")
DEFAULT_CAPTURE = "auto"
# "auto" reads while frozen, into memory, when at most this many pages must be
# read (a tracked incremental: the written pages plus what uncertain regions
# hold); else it captures copy-on-write.  Reading 1024 scattered pages frozen
# costs ~1 ms; the fork costs ~20 ms per GiB of 4 KiB-mapped memory (RESULTS.md).
AUTO_FROZEN_MAX_PAGES = 32768


def expected_written(pid: int) -> int:
    """A guess of the pages a tracked process writes between two snapshots
    before any was taken: 1 % of its resident memory."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) // 100
    except (OSError, ValueError, IndexError):
        return 0


def resolve_parent(store: Store, pid: int, ref: str) -> str:
    """Snapshot id of the parent named by ref ("latest": the newest snapshot
    whose root is pid)."""
    if ref == "latest":
        sid = store.latest(root_pid=pid)
        if not sid:
            raise DumpError(f"--parent latest: no snapshot of PID {pid} in store {store.path}")
        return sid
    path = store.resolve(ref)
    sid = os.path.basename(path)[: -len(".h5")]
    return sid


def freeze_tree(pid: int) -> FrozenTree:
    """Every process of the tree rooted at pid ptrace-stopped (release() to
    let them run)."""
    try:
        tree_ctx = FrozenTree(pid, Frozen)
        tree_ctx.__enter__()
    except (TreeError, procfs.ProcGone) as e:
        raise DumpError(str(e)) from None
    return tree_ctx


@contextlib.contextmanager
def _as_dump_error(pid: int):
    """Engine and /proc failures while dumping pid, as one-line DumpErrors
    (a process that vanished meanwhile is said to have exited)."""
    try:
        yield
    except procfs.ProcGone:
        raise DumpError(f"PID {pid} exited during the dump") from None
    except engine.EngineError as e:
        if not os.path.exists(f"/proc/{pid}"):
            raise DumpError(f"PID {pid} exited during the dump") from None
        raise DumpError(f"dump of PID {pid} failed: {e}") from None


class TreeCapture:
    """One tree's capture, in the two phases a freeze imposes: `frozen()` runs
    while every process is stopped (metadata, tracker, pages that must be read
    frozen, the copy-on-write child); `finish()` runs once they run again
    (pages from the COW child, deferred storing, unchanged pages) and returns
    the image; `committed(sid)` tells the tracker its new baseline; `close()`
    always releases the COW child.  dump() uses it for one tree; a round
    (round.py) freezes every tree of a job, runs each frozen(), releases them
    all, then finishes each."""

    def __init__(self, pid: int, writer, stats: DumpStats, tracker=None, parent_sid: str | None = None,
                 capture: str = DEFAULT_CAPTURE, hint=None):
        self.pid, self.writer, self.stats = pid, writer, stats
        # a TreeTracker holds one tracker per process of the tree
        self.tree_tracker = tracker if isinstance(tracker, TreeTracker) else None
        if self.tree_tracker is not None:
            tracker = self.tree_tracker.for_pid(pid)
        self.tracker, self.parent_sid, self.capture = tracker, parent_sid, capture
        self.parts: list = []  # (dumper, plans, tracker) of tracked processes of a tree
        self.started: list = []  # trackers started at this snapshot
        if hint is None and tracker is not None and tracker.pid == pid and tracker.vmflags:
            # the flags read after the tracker's last snapshot: smaps walks every
            # page table (~12 ms per GiB), and finish() checks them anyway
            hint = tracker.vmflags
        if tracker is not None:
            tracker.vmflags = None  # until finish() reads them again
        self.hint = hint if hint is not None else vmflags_by_vma(pid)
        self.child = 0
        self.released = None  # release_soon()'s future
        self.check = None  # the VmFlags check started by finish()
        self.pd = None
        self.plans: list = []
        self.single = False
        self.procs: list[Process] = []
        self.netns = None  # netns.of_tree

    def frozen(self, tree_ctx: FrozenTree) -> None:
        pid, writer, stats, tracker = self.pid, self.writer, self.stats, self.tracker
        procs = self.procs
        members = tree_ctx.members
        self.single = len(members) == 1 and members[0][1] is not None
        try:
            self.netns = netns.of_tree(members)
        except netns.NetnsError as e:
            raise DumpError(str(e)) from None
        if self.single:
            with _as_dump_error(pid):
                proc, self.pd, self.plans, self.child = _dump_single(
                    pid, members[0][1], writer, stats, tracker, self.parent_sid, self.capture, self.hint)
            procs.append(proc)
        else:
            self._frozen_tree(members)
        try:
            link_shared_files(procs)
            capture_pipes(procs, writer)
        except (OSError, procfs.ProcGone) as e:
            raise DumpError(f"dump of the pipes and shared files of PID {pid}'s tree failed: {e}") from None
        try:
            fdkinds.check_tree(procs)  # socket peers inside the tree
        except fdkinds.Unsupported as e:
            raise DumpError(str(e)) from None

    def _frozen_tree(self, members) -> None:
        """A tree of several processes, captured while frozen.  With a
        TreeTracker, each process whose tracker covers the time since the
        parent snapshot has only its written pages read (copied now, stored
        after the release); the others are read in full, pages several of
        them share copy-on-write once, and their trackers start now."""
        stats, tt = self.stats, self.tree_tracker
        if self.capture == "cow" or (self.tracker is not None and tt is None):
            stats.notes.append(f"a tree of {len(members)} processes: captured frozen"
                               + ("" if tt is not None else ", without dirty-page tracker"))
        if tt is None and self.tracker is not None:
            self.tracker.baseline = None
        shared_pages = SharedPagesOnce()
        tracked, hashed = [], []
        for p, tids in members:
            with _as_dump_error(p):
                if tids is None:
                    self.procs.append(zombie_record(p))
                    continue
                tr = tt.for_pid(p) if tt is not None else None
                if tr is not None and tr.usable_for(p, self.parent_sid):
                    proc, pd, plans, _ = _dump_single(p, tids, self.writer, stats, tr, self.parent_sid,
                                                      "auto", None, allow_cow=False)
                    self.parts.append((pd, plans, tr))
                    tracked.append(p)
                else:
                    if tr is not None:
                        tr.baseline = None
                        if tr.active:
                            tr.close()
                        tr.start(p)  # frozen: writes from now on are seen
                        self.started.append(tr)
                    proc = ProcessDumper(p, tids, self.writer, stats, shared_pages).dump()
                    hashed.append(p)
                self.procs.append(proc)
        stats.capture = "frozen"
        if tracked:
            stats.tracker = self.parts[0][2].name
            if hashed and self.parent_sid:
                stats.notes.append(f"{stats.tracker}: PIDs {', '.join(map(str, hashed))} not tracked since the "
                                   "parent (new or restarted): compared by hash, tracked from now")

    def finish(self) -> Image:
        """Store the pages (after the release).  The VmFlags check reads
        /proc/PID/smaps, which walks every page table (~12 ms per GiB): it
        runs in a thread meanwhile, and verify() waits for its verdict, which
        the writer asks for just before the snapshot becomes visible."""
        pd, stats = self.pd, self.stats
        if pd is not None:
            ex = ThreadPoolExecutor(1, thread_name_prefix="vmflags-check")
            self.check = ex.submit(check_vmflags_unchanged, self.pid, pd.flags_used, pd.flags_guessed)
            ex.shutdown(wait=False)
            try:
                self._store_pages()
            except BaseException:
                self.drop_check()  # the page error is the one to report
                raise
        else:
            self._store_pages()
        self.writer.attrs["tracker"] = stats.tracker
        self.writer.attrs["capture"] = stats.capture
        return Image(root_pid=self.pid, processes=self.procs, notes=list(stats.notes), netns=self.netns)

    def drop_check(self) -> None:
        """After a failure: wait for the VmFlags check, whose verdict no
        longer matters (it is never left running)."""
        if self.check is not None:
            self.check.exception()
            self.check = None

    def verify(self) -> None:
        """DumpError if the VmFlags used while frozen changed (see finish)."""
        if self.check is None:
            return
        now, error = self.check.result()
        self.check = None
        if self.tracker is not None:
            self.tracker.vmflags = now  # right for the next dump's hint, even after a failure
        if error:
            raise DumpError(error)

    def _store_pages(self) -> None:
        for pd, plans, _tr in self.parts:
            pd.flush_deferred()
            pd.add_unchanged(plans)
        pd = self.pd
        if self.child:
            try:
                pd.capture_pages(self.plans, self.child, frozen=False)
            except engine.EngineError as e:
                raise DumpError(f"dump of PID {self.pid} failed reading its copy-on-write child: {e}") from None
        if pd is not None:
            pd.flush_deferred()
            pd.add_unchanged(self.plans)

    def committed(self, sid: str) -> None:
        if self.tracker is not None and self.single:
            self.tracker.baseline = sid
        for tr in [t for _pd, _pl, t in self.parts] + self.started:
            tr.baseline = sid
        if self.tree_tracker is not None:  # processes that left the tree
            self.tree_tracker.prune({p.pid for p in self.procs if p.threads})

    def release_soon(self) -> None:
        """Start releasing the COW child in a thread: the kernel tears its
        copy of the page tables down (~20 ms per GiB of 4 KiB pages) while
        the snapshot is committed.  close() waits for it."""
        if self.child:
            child, self.child = self.child, 0
            ex = ThreadPoolExecutor(1, thread_name_prefix="cow-release")
            self.released = ex.submit(release_child, self.pid, child, self.pd.scratch_range[0], SCRATCH_SIZE)
            ex.shutdown(wait=False)

    def close(self) -> None:
        self.release_soon()
        if self.released is not None:
            done, self.released = self.released, None
            try:
                done.result()
            except engine.EngineError as e:  # the process exited meanwhile: the snapshot stands
                self.stats.notes.append(f"PID {self.pid}: its copy-on-write child was killed but not reaped ({e})")


def dump(pid: int, store: Store, kill: bool = False, progress=None, parent: str | None = None,
         attrs: dict | None = None, tracker=None, capture: str = DEFAULT_CAPTURE,
         vmflags: dict | None = None) -> tuple[str, DumpStats]:
    """Snapshot the process tree rooted at pid into store (every descendant,
    zombies included); returns (snapshot id, stats).

    parent: a snapshot of this tree (id, prefix or "latest"): an incremental
    in its chain, storing only content the store does not hold yet.
    attrs: extra snapshot attributes (job, round).
    tracker: an incremental.Tracker held by the caller across calls (the
    daemon); started at this snapshot if it is not already tracking since
    `parent`, else asked what was written (pages it vouches for are declared
    unchanged without being read).  Without one, pages are read and compared
    by content hash through the store's index.
    vmflags: procfs.vmflags_by_vma(pid), read shortly before (else it is
    read now: it walks every page table); checked again after the release.
    capture: "cow" (the freeze lasts a fork; pages are read from a held
    copy-on-write child while the process runs), "frozen" (read while
    frozen), or "auto" (the default: frozen when few pages must be read, i.e.
    a tracked incremental; else cow).
    A tree of several processes is captured frozen (no COW child); with a
    TreeTracker (one tracker per process) its tracked processes have only
    their written pages read."""
    t0 = time.monotonic()
    validate_target(pid)
    if capture not in CAPTURES:
        raise DumpError(f"unknown capture mode {capture!r} (one of: {', '.join(CAPTURES)})")
    store.ensure_writable()
    parent_sid = resolve_parent(store, pid, parent) if parent else None
    if parent_sid:
        with store.open(parent_sid) as preader:
            if not any(p["pid"] == pid for p in preader.image()["processes"]):
                raise DumpError(f"snapshot {parent_sid} has no process {pid}: it cannot be the parent of this dump")
    sid, writer = store.writer(pid, parent=parent_sid, **(attrs or {}))
    stats = DumpStats(tracker="hash" if parent_sid else "none", capture="frozen")
    # smaps is slow for big processes: read it before freezing
    tc = TreeCapture(pid, writer, stats, tracker, parent_sid, capture, hint=vmflags or None)
    if tracker is not None:  # a tracked incremental copies its written pages while frozen
        prewarm_lent_buffers(expected_written(pid))
    lock = None
    try:
        tree_ctx = freeze_tree(pid)
        try:
            t_freeze = time.monotonic()
            if kill:  # remote TCP peers: cut off before any socket is read (netns.py)
                lock = netns.PeerLock(tree_ctx.members)
                try:
                    lock.take()
                except (netns.NetnsError, OSError) as e:
                    raise DumpError(f"dump of PID {pid}: {e}") from None
            tc.frozen(tree_ctx)
            stats.frozen_s = time.monotonic() - t_freeze
        finally:
            tree_ctx.release()
        image = tc.finish()
        tc.release_soon()  # the COW child is read: release it while the snapshot is committed
        if lock and image.netns:
            image.netns["locked"] = lock.record()
            if lock.peers:
                ns = image.netns
                where = "this host" if ns.get("host") else f"network namespace {ns.get('name') or ns['inode']}"
                ip = "ip" if ns.get("host") else (f"ip -n {ns['name']}" if ns.get("name") else "(in it) ip")
                stats.notes.append(f"until the restore, {where} sends nothing to {', '.join(lock.peers)} "
                                   "(the TCP peers of the tree must not see it go); without a restore, lift "
                                   f"it with: {ip} rule del pref {netns.LOCK_PREF}; "
                                   f"{ip} route flush table {netns.LOCK_TABLE}")
        writer.commit(to_dict(image), before_publish=tc.verify)
    except BaseException:
        tc.drop_check()
        writer.abort()
        if lock:
            lock.release()
        raise
    finally:
        tc.close()
    tc.committed(sid)
    procs = image.processes
    stats.stored_bytes = writer.stored_bytes
    stats.new_pages = writer.new_pages
    stats.wall_s = time.monotonic() - t0
    stats.pids = [p.pid for p in procs]
    if kill:
        for p in procs:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if lock:
            lock.close_silently([p.pid for p in procs])
    return sid, stats


def _dump_single(pid: int, tids: list[int], writer, stats: DumpStats, tracker, parent_sid, capture: str, hint,
                 allow_cow: bool = True):
    """The frozen part of a one-process dump: tracker, metadata, page plan,
    pages that must be read frozen, and the COW child if the capture needs
    one (never without allow_cow: "auto" then stores large reads while
    frozen).  Returns (process, dumper, plans, child PID or 0)."""
    use_tracker = tracker is not None and tracker.usable_for(pid, parent_sid)
    if use_tracker:
        stats.tracker = tracker.name
    changes = None
    if tracker is not None:
        tracker.baseline = None  # until this snapshot commits
        if use_tracker:
            changes = tracker.collect_and_reset()
            stats.notes += changes.notes
        else:
            if tracker.active:
                tracker.close()
            tracker.start(pid)
    pd = ProcessDumper(pid, tids, writer, stats, incremental=parent_sid is not None)
    pd.vmflags_hint = hint
    pd.map_scratch()
    child = 0
    try:
        proc = pd.dump_meta()
        mode = capture
        plans = pd.plan_pages(proc.mappings, changes, "cow" if capture == "auto" else capture)
        defer = False
        if capture == "auto":
            small = pd.pages_to_read(plans) <= AUTO_FROZEN_MAX_PAGES
            mode = "frozen" if small or not allow_cow else "cow"
            if mode == "frozen":
                for pl in plans:
                    pl.frozen = True
            # few pages read frozen are only copied into memory now; hashed and
            # stored once it runs again
            defer = small
        stats.capture = mode
        pd.capture_pages(plans, pid, frozen=True, defer=defer)
        if mode == "cow":
            child = fork_held_child(pd.t)
    finally:
        if not child:
            pd.unmap_scratch()
    return proc, pd, plans, child
