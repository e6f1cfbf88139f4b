"""Freezing: which processes may be dumped, one process's threads ptrace-
stopped (Frozen), a whole tree (freeze_tree, with tree.FrozenTree), and
engine or /proc failures met meanwhile as one-line DumpErrors."""
from __future__ import annotations

import contextlib
import os

from ..kernel import engine, procfs
from .stats import DumpError
from .tree import FrozenTree, TreeError


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
        self.stopped = False  # in a group stop (SIGSTOP) before we came

    def __enter__(self):
        try:
            self.stopped = procfs.stat_fields(self.pid)[2] == "T"
        except procfs.ProcGone:
            pass
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
def as_dump_error(pid: int):
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
