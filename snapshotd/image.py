"""The image model: what a snapshot knows about a process tree.

Dump fills it, storage persists it (as JSON inside the snapshot file, see
docs/FORMAT.md), restore consumes it.  Page contents are NOT here: a mapping
only says where its pages are; the pages themselves travel separately
(storage keeps page data apart from metadata).  Binary fields (registers,
xstate, auxv, siginfo) are bytes here and base64 in JSON.
"""
from __future__ import annotations

import base64
import dataclasses
import functools
import typing
from dataclasses import dataclass, field

IMAGE_VERSION = 4  # 4: Process.locks, Thread.sched; 3: Image.netns; 2: fd kinds (File.state), SysV shared memory (Mapping.sysv), trees (pipe/fifo, File.share, zombies)
# 3: Image.netns (the tree's network namespace, restored into it; TCP peer lock), Process.subreaper


@dataclass
class Thread:
    tid: int
    regs: bytes  # struct user_regs_struct (216 bytes)
    xstate: bytes  # PTRACE_GETREGSET NT_X86_XSTATE
    sigmask: int
    comm: str
    tid_address: int = 0  # set_tid_address / CLONE_CHILD_CLEARTID
    robust_list: tuple = (0, 0)  # (head, len)
    rseq: dict | None = None  # {ptr, len, flags, sig}
    sigaltstack: tuple = (0, 2, 0)  # (ss_sp, ss_flags, ss_size); 2 = SS_DISABLE
    pending: list = field(default_factory=list)  # list[bytes]: thread-directed siginfo
    # scheduling (4): {"affinity": [cpu, ...], "nice": int, "policy": int, "priority": int}; None: not recorded
    sched: dict | None = None


@dataclass
class Mapping:
    start: int
    end: int
    prot: int  # PROT_* bits
    shared: bool
    offset: int = 0
    path: str = ""  # as /proc/PID/maps shows it ("" anonymous, "[stack]" ...)
    file: int | None = None  # index into Process.files for file-backed mappings
    vmflags: list = field(default_factory=list)  # smaps VmFlags ("gd", "dd", ...)
    # how the pages of this mapping are stored: "anon" (present, non-zero),
    # "cow" (private file mapping: only pages no longer backed by the file),
    # "file" (shared file mapping: content lives in the file), "none" (special),
    # "sysv" (SysV shared memory: content saved with the segment record)
    pages: str = "anon"
    shmem: int = 0  # shared anonymous memory: inode of its shmem object (views with one inode share pages)
    sysv: dict | None = None  # pages "sysv": SysV shared memory segment (docs/FORMAT.md 7.6.1)


@dataclass
class File:
    """An open file (a file description, or the file behind a mapping)."""

    # "reg", "dir", "chr", "memfd"; "pipe" (both ends inside the tree: recreated
    # with its queued bytes), "fifo" (named pipe, reopened by path, queued bytes
    # restored), "pipe-ext" (one end outside the tree: reconnected if it lives);
    # or an fd kind of snapshotd/fdkinds/ ("eventfd", "timerfd", "signalfd",
    # "epoll", "inotify", "unix", "tcp")
    kind: str
    path: str  # path when dumped, without " (deleted)"
    flags: int = 0  # open(2) status flags from fdinfo (without O_CLOEXEC)
    pos: int = 0
    deleted: bool = False
    content: str | None = None  # storage key of saved contents (deleted/tmpfs/memfd; pipe/fifo: queued bytes)
    size: int = 0  # pipe/fifo: buffer capacity (F_GETPIPE_SZ)
    mode: int = 0o600
    inode: int = 0
    mtime_ns: int = 0  # regular files: st_mtime_ns at the dump (4): a rollback that cuts the file sets it back
    dev: int = 0
    state: dict | None = None  # fd kinds: the kind's own record (docs/FORMAT.md 7.7.1)
    # open file description shared with other processes of the tree (kcmp):
    # every File with the same non-zero share is one description on restore
    share: int = 0


@dataclass
class Fd:
    fd: int
    file: int  # index into Process.files; dup'd fds share one index
    cloexec: bool = False


@dataclass
class Process:
    pid: int
    ppid: int
    pgid: int
    sid: int
    comm: str
    exe: str
    cwd: str
    umask: int
    creds: dict  # uid/gid (real, effective, saved, fs), groups
    rlimits: dict  # resource number (str) -> [soft, hard]
    mm: dict  # start_code, end_code, ..., brk, auxv (bytes)
    sigactions: dict  # signal number (str) -> [handler, flags, restorer, mask]
    itimers: list  # three (interval_sec, interval_usec, value_sec, value_usec)
    personality: int
    threads: list[Thread]
    mappings: list[Mapping]
    files: list[File]
    fds: list[Fd]
    shared_pending: list = field(default_factory=list)  # list[bytes] siginfo
    exe_file: int | None = None  # index into files
    # an exited child not yet reaped: only pid, ppid, pgid, sid, comm and the
    # wait status (/proc/PID/stat field 52) are recorded; restore recreates it
    # as a child of ppid that exits with that status
    zombie: bool = False
    exit_status: int = 0
    subreaper: bool = False  # PR_SET_CHILD_SUBREAPER: orphaned descendants are reparented to it
    cwd_id: list = field(default_factory=list)  # [st_dev, st_ino] of the cwd ([] if unknown)
    # file locks it holds (4): {"fd", "kind" ("posix", "ofd", "flock"), "write", "start", "end" (-1: EOF)}
    locks: list = field(default_factory=list)
    oom_score_adj: int = 0  # /proc/PID/oom_score_adj (4)
    stopped: bool = False  # in a group stop (SIGSTOP, scontrol suspend) when dumped (4): restored stopped


@dataclass
class Image:
    """One snapshot's metadata: a tree of processes (root first, every parent
    before its children; Process.ppid links them)."""

    root_pid: int
    processes: list[Process]
    version: int = IMAGE_VERSION
    notes: list = field(default_factory=list)  # warnings worth keeping
    # the tree's network namespace and the dump's TCP peer lock (netns.py):
    # {dev, inode, name, host, locked}; None: restore where snapshotd runs
    netns: dict | None = None


# ---- JSON-friendly conversion ----

def _enc(v):
    if isinstance(v, bytes):
        return {"b64": base64.b64encode(v).decode()}
    if dataclasses.is_dataclass(v):
        return {f.name: _enc(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, (list, tuple)):
        return [_enc(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _enc(x) for k, x in v.items()}
    return v


def _dec(v):
    if isinstance(v, dict):
        if set(v) == {"b64"}:
            return base64.b64decode(v["b64"])
        return {k: _dec(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_dec(x) for x in v]
    return v


@functools.lru_cache(maxsize=None)
def _fields(cls) -> tuple:
    """(field, type hint) of a dataclass, once per class: get_type_hints
    compiles every annotation string (from __future__ import annotations)
    on each call, which cost ~0.1 s per restore of a small tree."""
    hints = typing.get_type_hints(cls)
    return tuple((f, hints[f.name]) for f in dataclasses.fields(cls))


def _build(cls, d):
    kw = {}
    for f, t in _fields(cls):
        if f.name not in d:
            continue
        val = _dec(d[f.name])
        inner = typing.get_args(t)
        if inner and dataclasses.is_dataclass(inner[0]) and isinstance(val, list):
            val = [_build(inner[0], x) for x in d[f.name]]
        elif f.name in ("robust_list", "sigaltstack") and isinstance(val, list):
            val = tuple(val)
        kw[f.name] = val
    return cls(**kw)


def to_dict(image: Image) -> dict:
    return _enc(image)


def from_dict(d: dict) -> Image:
    if d.get("version", 0) > IMAGE_VERSION:
        raise ValueError(f"image version {d.get('version')} is newer than this snapshotd understands ({IMAGE_VERSION})")
    img = _build(Image, d)
    img.processes = [_build(Process, p) for p in d["processes"]]
    for p, pd in zip(img.processes, d["processes"]):
        p.threads = [_build(Thread, t) for t in pd["threads"]]
        p.mappings = [_build(Mapping, m) for m in pd["mappings"]]
        p.files = [_build(File, f) for f in pd["files"]]
        p.fds = [_build(Fd, f) for f in pd["fds"]]
    return img
