"""Kernel objects that several restored processes share, created once on
snapshotd's side and handed to each process with pidfd_getfd: the processes
then hold the very same object, as after the fork that shared it.

- open file descriptions shared across processes (File.share, found by kcmp
  at dump time): one open(), so one offset and one set of status flags;
- shared anonymous memory (Mapping.shmem): one shmem object per dumped inode;
- deleted files and memfds: one object per dumped inode;
- pipes with both ends in the tree and FIFOs: one pipe per dumped inode, with
  the bytes that were queued at dump time written back into it;
- sockets (fdkinds/unix.py, tcp.py): the unix sockets of the whole tree are
  built together (a pair's ends may be in different processes), TCP
  connections leave repair mode once both ends exist (after_tree).
"""
from __future__ import annotations

import fcntl
import os

from ..image import File, Process

OPEN_STRIP = os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOCTTY


class SharedObjects:
    def __init__(self, reader, procs: list[Process]):
        self.reader = reader
        self.procs = procs
        self.notes: list[str] = []
        self.kinds: dict = {}  # fd kind -> its tree-wide restore state (fdkinds/)
        self.closers: list = []  # called by close()
        self.descs: dict[int, int] = {}  # File.share -> our fd (the description)
        self.inodes: dict = {}  # (dev, inode) -> our fd of a recreated deleted file or memfd
        self.shmem: dict[int, int] = {}  # shmem inode -> our fd of the recreated object
        self.shmem_size: dict[int, int] = {}  # shmem inode -> size covering every view in the tree
        for p in procs:
            for m in p.mappings:
                if m.shared and m.shmem:
                    self.shmem_size[m.shmem] = max(self.shmem_size.get(m.shmem, 0), m.offset + m.end - m.start)
        # (dev, inode) -> {O_RDONLY: fd, O_WRONLY: fd} of the recreated pipe;
        # a FIFO also keeps an O_RDWR fd, so that opening either end never
        # blocks and the pipe (with its bytes) lives until the tree has it
        self.pipes: dict[tuple[int, int], dict[int, int]] = {}
        self.used_ends: set = set()
        self.outer: dict[int, int] = {}  # PID/TID in the image -> as snapshotd sees it (new PID namespace)

    def pipe_end(self, f: File) -> int:
        """Our fd for a new description of one end of a pipe or FIFO."""
        key = (f.dev, f.inode)
        if key not in self.pipes:
            self.pipes[key] = self._make_pipe(f)
        ends = self.pipes[key]
        mode = f.flags & os.O_ACCMODE
        if f.kind == "fifo":
            fd = os.open(f.path, (f.flags & ~OPEN_STRIP) | os.O_NONBLOCK | os.O_CLOEXEC)
        elif mode != os.O_RDWR and (key, mode) not in self.used_ends:
            fd = ends[mode]  # the pipe's own end, for the first description of it
            self.used_ends.add((key, mode))
        else:  # another description of the same end: reopen it (FIFO semantics)
            fd = os.open(f"/proc/self/fd/{ends[os.O_RDONLY]}",
                         (f.flags & ~OPEN_STRIP & ~os.O_NOFOLLOW) | os.O_NONBLOCK | os.O_CLOEXEC)
        fcntl.fcntl(fd, fcntl.F_SETFL, f.flags)  # status flags as dumped (O_NONBLOCK or not)
        return fd

    def _make_pipe(self, f: File) -> dict[int, int]:
        data = self.reader.file_content(f.content) if f.content else b""
        if f.kind == "fifo":
            keep = os.open(f.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            ends = {os.O_RDWR: keep}
            wfd = keep
        else:
            r, w = os.pipe2(os.O_CLOEXEC)
            ends = {os.O_RDONLY: r, os.O_WRONLY: w}
            wfd = w
        want = max(f.size, len(data))
        if want > fcntl.fcntl(wfd, fcntl.F_GETPIPE_SZ):
            try:
                fcntl.fcntl(wfd, fcntl.F_SETPIPE_SZ, want)
            except OSError as e:
                self.notes.append(f"pipe {f.path}: buffer of {want} bytes not restored ({e.strerror})")
        if data:
            os.set_blocking(wfd, True)
            os.write(wfd, data)  # fits: the buffer is at least as large as the data
            os.set_blocking(wfd, f.kind != "fifo")
        return ends

    def close(self) -> None:
        fds = [*self.descs.values(), *self.inodes.values(), *self.shmem.values()]
        for ends in self.pipes.values():
            fds += ends.values()
        for fd in set(fds):
            try:
                os.close(fd)
            except OSError:
                pass
        self.descs, self.inodes, self.shmem, self.pipes = {}, {}, {}, {}
        for c in self.closers:
            c()
        self.closers, self.kinds = [], {}
