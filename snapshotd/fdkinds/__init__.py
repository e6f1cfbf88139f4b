"""File descriptor kinds beyond plain files and pipes: event descriptors,
unix sockets.  One module per kind, each with

    dump(ctx, fd, link, fdinfo_text) -> dict     (the File.state record)
    restore(rctx, file) -> int                   (an fd on snapshotd's side,
                                                  passed into the target by
                                                  the restorer with pidfd_getfd)

and optionally after_fds(rctx, file, target_fd) for what can only be done
once every fd of the process is back (epoll's watched set).  Any fd whose
kind is not handled here, nor by dump.py's files and pipes, is refused at
dump time with one line naming the fd and its type.
"""
from __future__ import annotations

import os

from . import _sys, epoll, eventfd, inotify, signalfd, timerfd, unix
from .errors import Failed, Unsupported

# /proc/PID/fd link -> kind module
_ANON = {
    "anon_inode:[eventfd]": eventfd,
    "anon_inode:[timerfd]": timerfd,
    "anon_inode:[signalfd]": signalfd,
    "anon_inode:[eventpoll]": epoll,
    "anon_inode:inotify": inotify,
}
KINDS = {m.KIND: m for m in (eventfd, timerfd, signalfd, epoll, inotify, unix)}



def is_plain(link: str) -> bool:
    """Files and pipes: handled by dump.py itself."""
    return link.startswith("/") or link.startswith("pipe:")


def kind_of(link: str) -> str | None:
    if link in _ANON:
        return _ANON[link].KIND
    if link.startswith("socket:["):
        return unix.KIND  # other families are refused by unix.dump
    return None


class DumpContext:
    """fd-kind dumping of one process: owns our pidfd_getfd copies."""

    def __init__(self, pid: int):
        self.pid = pid
        self._pidfd = -1
        self.records: dict[int, dict] = {}  # fd -> state, for cross-fd checks

    def grab(self, fd: int) -> int:
        """Our own copy of the target's fd (same open file description).
        The caller closes it."""
        if self._pidfd < 0:
            self._pidfd = os.pidfd_open(self.pid)
        return _sys.pidfd_getfd(self._pidfd, fd)

    def refuse(self, fd: int, what: str) -> Unsupported:
        return Unsupported(f"PID {self.pid} fd {fd}: {what}")

    def dump(self, fd: int, link: str) -> dict:
        kind = kind_of(link)
        if kind is None:
            raise self.refuse(fd, f"{link} is not supported")
        try:
            with open(f"/proc/{self.pid}/fdinfo/{fd}") as f:
                info = f.read()
        except OSError as e:
            raise self.refuse(fd, f"cannot read fdinfo: {e.strerror}") from None
        state = KINDS[kind].dump(self, fd, link, info)
        self.records[fd] = state
        return state

    def finish(self) -> None:
        """Checks that need every fd (unix peers inside the process)."""
        unix.check(self)

    def close(self):
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


class RestoreContext:
    """fd-kind restoring of one process, kept on the Restorer."""

    def __init__(self, restorer):
        self.r = restorer
        self.cache: dict = {}  # per-kind shared state (e.g. all unix sockets built at once)


def _ctx(restorer) -> RestoreContext:
    c = getattr(restorer, "_fdkinds", None)
    if c is None:
        c = restorer._fdkinds = RestoreContext(restorer)
    return c


def restore(restorer, f) -> int:
    return KINDS[f.kind].restore(_ctx(restorer), f)


def after_fds(restorer) -> None:
    """Second pass once every fd is in the target (epoll_ctl ADD needs the
    watched fds)."""
    c = _ctx(restorer)
    for fdrec in sorted(restorer.p.fds, key=lambda x: x.fd):
        f = restorer.p.files[fdrec.file]
        hook = getattr(KINDS.get(f.kind), "after_fds", None)
        if hook:
            hook(c, f, fdrec.fd)
