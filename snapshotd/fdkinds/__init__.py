"""File descriptor kinds beyond plain files and pipes: event descriptors
(eventfd, timerfd, signalfd, epoll, inotify) and sockets (unix, tcp).  One
module per kind, each with

    dump(ctx, fd, link, fdinfo_text) -> dict     (the File.state record)
    restore(rctx, file) -> int                   (an fd on snapshotd's side,
                                                  passed into the target by
                                                  the restorer with pidfd_getfd)

and optionally after_fds(rctx, file, target_fd) for what can only be done
once every fd of the process is back (epoll's watched set, TCP leaving
repair mode).  Any fd whose kind is not handled here, nor by dump.py's files
and pipes, is refused at dump time with one line naming the fd and its type.
SysV shared memory (sysvshm.py) is a kind of mapping, not of fd, but lives
here too.
"""
from __future__ import annotations

import os
import socket

from ..kernel import engine
from ..kernel import libc
from . import epoll, eventfd, inotify, signalfd, tcp, timerfd, unix
from .errors import Failed, Unsupported  # noqa: F401 - dump.py/restore.py catch them

# /proc/PID/fd link -> kind module
_ANON = {
    "anon_inode:[eventfd]": eventfd,
    "anon_inode:[timerfd]": timerfd,
    "anon_inode:[signalfd]": signalfd,
    "anon_inode:[eventpoll]": epoll,
    "anon_inode:inotify": inotify,
}
KINDS = {m.KIND: m for m in (eventfd, timerfd, signalfd, epoll, inotify, unix, tcp)}


def is_plain(link: str) -> bool:
    """Files and pipes: handled by dump.py itself."""
    return link.startswith("/") or link.startswith("pipe:")


def _kind_of(link: str) -> str | None:
    if link in _ANON:
        return _ANON[link].KIND
    if link.startswith("socket:["):
        return "socket"  # unix or tcp, by its family (below)
    return None


_FAMILIES = {int(f): f.name for f in socket.AddressFamily}
_TYPES = {1: "SOCK_STREAM", 2: "SOCK_DGRAM", 3: "SOCK_RAW", 4: "SOCK_RDM", 5: "SOCK_SEQPACKET", 10: "SOCK_PACKET"}


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
        return libc.pidfd_getfd(self._pidfd, fd)

    def refuse(self, fd: int, what: str) -> Unsupported:
        return Unsupported(f"PID {self.pid} fd {fd}: {what}")

    def dump(self, fd: int, link: str) -> tuple[str, dict]:
        """(kind, state record) of the target's fd, or Unsupported."""
        kind = _kind_of(link)
        if kind is None:
            raise self.refuse(fd, f"{link} is not supported")
        try:
            with open(f"/proc/{self.pid}/fdinfo/{fd}") as f:
                info = f.read()
        except OSError as e:
            raise self.refuse(fd, f"cannot read fdinfo: {e.strerror}") from None
        try:
            if kind == "socket":
                kind = self._socket_kind(fd, link)
            state = KINDS[kind].dump(self, fd, link, info)
        except OSError as e:
            raise self.refuse(fd, f"{link}: cannot read its state: {e.strerror or e}") from None
        self.records[fd] = state
        return kind, state

    def _socket_kind(self, fd: int, link: str) -> str:
        ours = self.grab(fd)
        s = socket.socket(fileno=ours)
        try:
            fam = s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
            typ = s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
            proto = s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
        finally:
            s.close()
        if fam == socket.AF_UNIX and typ in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET):
            return unix.KIND
        if fam in (socket.AF_INET, socket.AF_INET6) and typ == socket.SOCK_STREAM and proto in (0, socket.IPPROTO_TCP):
            return tcp.KIND
        raise self.refuse(fd, f"{link} ({_FAMILIES.get(fam, f'family {fam}')} {_TYPES.get(typ, f'type {typ}')}) is not supported")

    def finish(self) -> None:
        """Checks that need every fd of the process: none at present (socket
        peers are checked across the whole tree, check_tree)."""

    def close(self):
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


def check_tree(procs) -> None:
    """Socket peers must be inside the dumped tree (a socketpair or loopback
    connection between two processes of it is fine); raises Unsupported
    naming the PID and fd otherwise."""
    socks: dict = {}  # unix inode -> (pid, fd, record)
    ends: list = []  # tcp (pid, fd, record)
    for p in procs:
        if p.zombie:
            continue
        for fdrec in sorted(p.fds, key=lambda x: x.fd):
            f = p.files[fdrec.file]
            if f.kind == unix.KIND and "ino" in f.state:
                socks.setdefault(f.state["ino"], (p.pid, fdrec.fd, f.state))
            elif f.kind == tcp.KIND:
                ends.append((p.pid, fdrec.fd, f.state))
    unix.check_tree(socks)
    tcp.check_tree(ends)


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


def after_tree(shared) -> None:
    """Once every process of the tree has its fds (before any resumes):
    TCP connections leave repair mode."""
    tcp.after_tree(shared)


def after_fds(restorer) -> None:
    """Second pass once every fd is in the target (epoll_ctl ADD needs the
    watched fds)."""
    c = _ctx(restorer)
    for fdrec in sorted(restorer.p.fds, key=lambda x: x.fd):
        f = restorer.p.files[fdrec.file]
        hook = getattr(KINDS.get(f.kind), "after_fds", None)
        if hook:
            try:
                hook(c, f, fdrec.fd)
            except engine.EngineError:
                raise  # an injected syscall failed: restore reports it as such
            except OSError as e:
                raise Failed(f"fd {fdrec.fd} ({f.path}): {e.strerror or e}") from None
