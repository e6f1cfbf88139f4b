"""Process trees on the dump side: find every descendant, freeze them all,
record zombies, and find what the processes share (open file descriptions,
pipes and their queued bytes).

Freezing is complete by construction: a process is frozen (every thread
ptrace-stopped) before its children are listed from /proc/PID/task/*/children,
and a stopped process cannot fork, so no child can appear behind our back.  A
final pass lists the children of every member again and freezes newcomers
until nothing changes.
"""
from __future__ import annotations

import fcntl
import os

import numpy as np

from ..kernel import engine, procfs
from ..kernel import syscalls as sc
from .._engine import ffi, lib
from ..image import File, Process

PIPE_MAX = 1 << 20  # largest pipe buffer an unprivileged F_SETPIPE_SZ gives (pipe-max-size)


class TreeError(Exception):
    pass


class FrozenTree:
    """Every process of the tree rooted at root, frozen; zombies recorded.
    `members` lists (pid, tids or None for a zombie), parents first."""

    def __init__(self, root: int, frozen_cls):
        self.root = root
        self.frozen_cls = frozen_cls  # dump.Frozen: freezes one process
        self.members: list[tuple[int, list[int] | None]] = []
        self.stopped: set[int] = set()  # processes that were in a group stop (SIGSTOP)
        self._frozen: list = []

    def _add(self, pid: int) -> list[int]:
        """Freeze pid (or record it as a zombie); returns its children."""
        try:
            st = procfs.stat_fields(pid)
        except procfs.ProcGone:
            if pid == self.root:
                raise TreeError(f"no process with PID {pid}") from None
            return []  # reaped meanwhile (its parent was not frozen yet, or auto-reaps)
        nspid = procfs.status(pid).get("NSpid", "").split()
        if len(nspid) > 1:
            # e.g. a tree restored with --pidns: the image would record the
            # PIDs we see, not the ones the processes know
            raise TreeError(f"PID {pid} ({st[1]}) lives in a nested PID namespace (its PID there is {nspid[-1]}); "
                            "snapshotd cannot dump such processes yet")
        if st[2] in ("Z", "X"):
            if len(procfs.tids(pid)) > 1:
                raise TreeError(f"PID {pid} ({st[1]}): its main thread exited while other threads run; "
                                "snapshotd cannot restore that")
            self.members.append((pid, None))
            return []
        fz = self.frozen_cls(pid)
        try:
            fz.__enter__()
        except Exception:
            # it may have exited between the look and the freeze
            try:
                if procfs.stat_fields(pid)[2] in ("Z", "X") and pid != self.root:
                    self.members.append((pid, None))
                    return []
            except procfs.ProcGone:
                if pid != self.root:
                    return []
            raise
        self._frozen.append(fz)
        self.members.append((pid, fz.tids))
        if fz.stopped:
            self.stopped.add(pid)
        return procfs.children(pid)

    def __enter__(self):
        try:
            queue = [self.root]
            seen: set[int] = set()
            while queue:
                while queue:
                    pid = queue.pop(0)
                    if pid in seen:
                        continue
                    seen.add(pid)
                    queue += self._add(pid)
                # re-scan: every member is frozen now, so this finds nothing
                # unless a child appeared between a freeze and its listing
                for pid, tids in self.members:
                    if tids is not None:
                        queue += [c for c in procfs.children(pid) if c not in seen]
        except BaseException:
            self.release()
            raise
        return self

    def release(self):
        for fz in reversed(self._frozen):
            fz.release()
        self._frozen = []

    def __exit__(self, *exc):
        self.release()


def zombie_record(pid: int) -> Process:
    """What restore needs of an exited, unreaped child: its place in the tree
    and its wait status (/proc/PID/stat field 52, exit_code, as waitpid
    reports it)."""
    st = procfs.stat_fields(pid)
    return Process(
        pid=pid, ppid=int(st[3]), pgid=int(st[4]), sid=int(st[5]), comm=st[1], exe="", cwd="", umask=0,
        creds={}, rlimits={}, mm={}, sigactions={}, itimers=[], personality=0, threads=[], mappings=[],
        files=[], fds=[], zombie=True, exit_status=int(st[51]))


# ---- what the processes of a tree share ----

def _first_fds(p: Process) -> dict[int, int]:
    """file index -> one fd number using it (fd-backed files only)."""
    out: dict[int, int] = {}
    for f in p.fds:
        out.setdefault(f.file, f.fd)
    return out


def link_shared_files(procs: list[Process]) -> None:
    """Mark open file descriptions used by several processes (a fork shares
    them: same offset, same flags) with one File.share id, by kcmp(KCMP_FILE)
    between candidates with the same device and inode."""
    reps: dict[tuple[int, int], list] = {}  # (dev, ino) -> [(pid, fd, File)]
    next_id = 1
    for p in procs:
        if p.zombie:
            continue
        for idx, fd in _first_fds(p).items():
            f = p.files[idx]
            key = (f.dev, f.inode)
            same = None
            for opid, ofd, of in reps.get(key, []):
                if opid != p.pid and lib.snp_kcmp(opid, p.pid, sc.KCMP_FILE, ofd, fd) == 0:
                    same = of
                    break
            if same is None:
                reps.setdefault(key, []).append((p.pid, fd, f))
                continue
            if not same.share:
                same.share = next_id
                next_id += 1
            f.share = same.share


def dedupe_description_locks(procs: list[Process]) -> None:
    """An OFD or flock lock belongs to an open file description: processes
    sharing the description (link_shared_files) all show it in fdinfo; it is
    kept in the first of them only (restore gives the others the same
    description, lock included)."""
    seen = set()
    for p in procs:
        if p.zombie or not p.locks:
            continue
        file_of = {fd.fd: fd.file for fd in p.fds}
        keep = []
        for lk in p.locks:
            f = p.files[file_of[lk["fd"]]]
            if lk["kind"] != "posix" and f.share:
                key = (lk["kind"], f.share, lk["start"], lk["end"])
                if key in seen:
                    continue
                seen.add(key)
            keep.append(lk)
        p.locks = keep


def _accmode(f: File) -> int:
    return f.flags & os.O_ACCMODE


def capture_pipes(procs: list[Process], writer) -> None:
    """Pipes whose two ends are both inside the tree become kind "pipe", and
    the bytes queued in them (and in FIFOs) are saved without consuming them:
    we take a copy of a read end (pidfd_getfd: the same description, no new
    open) and tee(2) it into a private pipe (engine/csrc/pipes.c)."""
    ends: dict[tuple[int, int], set[int]] = {}
    users: dict[tuple[int, int], list] = {}
    for p in procs:
        if p.zombie:
            continue
        for idx, fd in _first_fds(p).items():
            f = p.files[idx]
            if f.kind in ("pipe-ext", "fifo"):
                key = (f.dev, f.inode)
                ends.setdefault(key, set()).add(_accmode(f))
                users.setdefault(key, []).append((p.pid, fd, f))
    for key, modes in ends.items():
        files = [f for _pid, _fd, f in users[key]]
        kind = files[0].kind
        if kind == "pipe-ext":
            if not (os.O_RDWR in modes or {os.O_RDONLY, os.O_WRONLY} <= modes):
                continue  # the other end is outside the tree: reconnected at restore
            kind = "pipe"
        data, cap = _peek(users[key], key)
        for f in files:
            f.kind = kind
            f.size = cap
        if data:
            ckey = f"pipe:{key[0]}:{key[1]}"
            writer.add_file(ckey, data)
            for f in files:
                f.content = ckey


def _peek(users: list, key) -> tuple[bytes, int]:
    reader = next(((pid, fd) for pid, fd, f in users if _accmode(f) in (os.O_RDONLY, os.O_RDWR)), None)
    if reader is not None:
        ours = engine.check(lib.snp_grab_fd(*reader), f"pidfd_getfd of fd {reader[1]} of PID {reader[0]}")
    else:
        # only write ends in the tree (a FIFO): a reader of our own; O_NONBLOCK
        # so that the open never waits
        pid, fd, _f = users[0]
        ours = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        buf = ffi.new("char[]", PIPE_MAX)
        n = lib.snp_pipe_peek(ours, buf, PIPE_MAX)
        engine.check(n, f"read the bytes queued in pipe {key[1]}")
        cap = fcntl.fcntl(ours, fcntl.F_GETPIPE_SZ)
        return ffi.buffer(buf, n)[:], cap
    finally:
        os.close(ours)


class SharedPagesOnce:
    """Pages the processes of a tree share are read once, decided from
    /proc/PID/pagemap before reading:
    - shared anonymous memory: captured from the first process that has a
      page mapped, not again from the others (restore writes it once,
      through that process's view, into the one shmem object all views
      share);
    - private pages still shared copy-on-write after fork (the same physical
      frame, pagemap bits 0-54, in several processes, all frozen): read and
      hashed once, and the other processes' page tables reuse the reference
      (each process still gets its own private copy at restore)."""

    ZERO = -2  # by_pfn: a zero page, dropped from the page table

    def __init__(self):
        self.seen: dict[int, np.ndarray] = {}  # shmem inode -> bool per page offset
        self.by_pfn: dict[int, int] = {}  # physical frame -> pool reference (or ZERO)

    def split_private(self, pmfd: int, lo: int, hi: int):
        """For private anonymous [lo, hi): (addresses and references of pages
        whose frame was captured already, ranges still to read, the frame of
        every page of [lo, hi))."""
        n = (hi - lo) // sc.PAGE
        pm = np.frombuffer(os.pread(pmfd, n * 8, lo // sc.PAGE * 8), dtype=np.uint64)
        if len(pm) < n:
            return np.empty(0, np.uint64), np.empty(0, np.uint64), [(lo, hi)], np.zeros(n, np.uint64)
        present = (pm >> np.uint64(63)) != 0
        pfn = np.where(present, pm & np.uint64((1 << 55) - 1), np.uint64(0))
        get = self.by_pfn.get
        refs = np.fromiter((get(int(f), -1) for f in pfn), dtype=np.int64, count=n)
        refs[pfn == 0] = -1
        known = refs != -1
        keep = known & (refs != self.ZERO)
        todo = ((pm >> np.uint64(62)) != 0) & ~known  # present or swapped, not seen yet
        edges = np.flatnonzero(np.diff(np.concatenate(([0], todo.astype(np.int8), [0]))))
        ranges = [(lo + int(s) * sc.PAGE, lo + int(e) * sc.PAGE) for s, e in zip(edges[0::2], edges[1::2])]
        addrs = lo + np.flatnonzero(keep).astype(np.uint64) * np.uint64(sc.PAGE)
        return addrs, refs[keep].astype(np.uint64), ranges, pfn

    def remember(self, pfn: np.ndarray, lo: int, addrs: np.ndarray, rows, refs: np.ndarray) -> None:
        """Record the frames of pages just captured (addrs, within the range
        starting at lo whose frames are pfn): rows kept with refs, the other
        pages were zero."""
        frames = pfn[((addrs - np.uint64(lo)) // np.uint64(sc.PAGE)).astype(np.int64)]
        vals = np.full(len(addrs), self.ZERO, dtype=np.int64)
        if rows is None:
            vals[:] = refs.astype(np.int64)
        else:
            vals[rows] = refs.astype(np.int64)
        for f, v in zip(frames.tolist(), vals.tolist()):
            if f:
                self.by_pfn[f] = v

    def ranges(self, pmfd: int, mp) -> list[tuple[int, int]]:
        """Address ranges of mapping mp still to capture."""
        if not (mp.shared and mp.shmem):
            return [(mp.start, mp.end)]
        n = (mp.end - mp.start) // sc.PAGE
        pm = np.frombuffer(os.pread(pmfd, n * 8, mp.start // sc.PAGE * 8), dtype=np.uint64)
        if len(pm) < n:
            return [(mp.start, mp.end)]
        present = (pm >> np.uint64(62)) != 0  # bit 63 present, bit 62 swapped
        first = mp.offset // sc.PAGE
        seen = self.seen.get(mp.shmem)
        if seen is None or len(seen) < first + n:
            grown = np.zeros(first + n, dtype=bool)
            if seen is not None:
                grown[: len(seen)] = seen
            seen = self.seen[mp.shmem] = grown
        want = present & ~seen[first : first + n]
        seen[first : first + n] |= present
        edges = np.flatnonzero(np.diff(np.concatenate(([0], want.astype(np.int8), [0]))))
        return [(mp.start + int(s) * sc.PAGE, mp.start + int(e) * sc.PAGE) for s, e in zip(edges[0::2], edges[1::2])]
