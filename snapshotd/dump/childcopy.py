"""Reading a held copy-on-write child's pages by having the child copy them.

The COW child (capture.py) is read after the process runs again.  Through
/proc/PID/mem each page is looked up alone and copied twice (about half of
a full dump's CPU); process_vm_readv would unshare (copy) every page the
child still shares with the process.  The child itself reads its pages for
free, so it runs a copy loop (engine/csrc/childcopy.c) that moves runs of
pages into a shared memory file we map too: one copy, in user space, on
the other CPU while we hash and store the previous batch.

Setting the child up, by syscalls injected into it (it never runs the
program's code; its fd table is the process's, through CLONE_FILES):
  prctl(PR_SET_DUMPABLE, 0)   the program's user cannot reach the child;
  close_range(0, ~0, CLOSE_RANGE_UNSHARE)   a private, empty fd table,
                              made without touching the process's files;
  socketpair; we take one end (pidfd_getfd) and send our memory file over
  it (SCM_RIGHTS: it works whatever the process's user, who may not open
  our /proc/self/fd); recvmsg; mmap MAP_SHARED; close_range again.
A seccomp filter the child inherited is suspended for it
(PTRACE_O_SUSPEND_SECCOMP).  The memory file is ours (its pages are
charged to snapshotd, not to the job's cgroup) and is kept for the next
dump.  Any refusal (an fd limit, no CAP_SYS_ADMIN for the filter) makes the
caller read through /proc/PID/mem instead; SNAPSHOTD_COPY_LOOP=0 always does.

The child stays in the job's cgroups, as CRIU's parasite does: its copying
(~0.15 CPU-s per GiB) is the job's CPU time, and if the job is frozen
(cgroup freezer, e.g. a Slurm suspend) in the middle of a dump, the dump
waits until it is thawed."""
from __future__ import annotations

import errno
import mmap
import os
import queue
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..kernel import engine, inject, procfs
from ..kernel import syscalls as sc
from .._engine import ffi, lib
from ..kernel.libc import pidfd_getfd
from .pageread import Batch, recycle
from ..pagehash import page_runs
from ..faults import crashpoint
from ..spare import Spare

SLOTS = 4  # one being copied, one hashed, one stored, one still being compressed
SLOT_PAGES = 2048  # 8 MiB: 16 were no faster, and the file stays in memory between dumps
LOOP_OFFSET = inject.CODE_ROOM  # the loop's place in the scratch area (RWX; the setup's arguments come after)
AF_UNIX, SOCK_DGRAM, SOCK_CLOEXEC = 1, 2, 0o2000000
ALL_FDS = 0xFFFFFFFF
CLOSE_RANGE_UNSHARE = 2
MFD_NOEXEC_SEAL = 8


def enabled() -> bool:
    return os.environ.get("SNAPSHOTD_COPY_LOOP", "1") != "0"


class _Shared:
    """Our memory file: SLOTS slots of n pages, then per slot a triple table
    and the loop's flag byte per page."""

    def __init__(self, n: int):
        self.n = n
        self.table_bytes = n * 24 + n  # at most one (source, destination, pages) per page; flags
        self.size = SLOTS * (n * engine.PAGE + self.table_bytes)
        try:  # never executable (required where vm.memfd_noexec is 2; Linux >= 6.3)
            self.fd = os.memfd_create("snapshotd-copy", os.MFD_CLOEXEC | MFD_NOEXEC_SEAL)
        except OSError:
            self.fd = os.memfd_create("snapshotd-copy", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, self.size)
            self.mm = mmap.mmap(self.fd, self.size)
        except OSError:
            os.close(self.fd)
            raise
        whole = np.frombuffer(self.mm, dtype=np.uint8)
        self.data = [whole[k * n * engine.PAGE:(k + 1) * n * engine.PAGE] for k in range(SLOTS)]
        self.tables = [whole[self.table_offset(k):self.table_offset(k) + n * 24].view(np.uint64).reshape(n, 3)
                       for k in range(SLOTS)]
        self.flags = [whole[self.flags_offset(k):self.flags_offset(k) + n] for k in range(SLOTS)]
        self.addrs = [np.empty(n, dtype=np.uint64) for _ in range(SLOTS)]
        self.hashes = [np.empty((n, 32), dtype=np.uint8) for _ in range(SLOTS)]
        # Its pages are allocated here, slot after slot in a thread while the
        # first ones are used: so charged to snapshotd's cgroup, not to the
        # job's (the child only maps pages that exist).
        self.warm = [threading.Event() for _ in range(SLOTS)]
        self.failed: OSError | None = None  # the allocation's error: never copied into then
        threading.Thread(target=self._allocate, name="copy-file", daemon=True).start()

    def _allocate(self) -> None:
        try:
            for k in range(SLOTS):
                os.posix_fallocate(self.fd, self.data_offset(k), self.n * engine.PAGE)
                self.warm[k].set()
        except OSError as e:
            self.failed = e
        finally:
            for w in self.warm:
                w.set()

    def data_offset(self, k: int) -> int:
        return k * self.n * engine.PAGE

    def table_offset(self, k: int) -> int:
        return SLOTS * self.n * engine.PAGE + k * self.table_bytes

    def flags_offset(self, k: int) -> int:
        return self.table_offset(k) + self.n * 24


_spare = Spare()  # one memory file kept between dumps


def _take_shared(n: int) -> _Shared:
    return _spare.take(lambda: _Shared(n), lambda s: s.n == n)


def _give_shared(s: _Shared) -> None:
    if s.failed is None:
        _spare.give(s)


class _Slot:
    """What pageread.Batch reads from one slot."""
    __slots__ = ("addrs", "data", "hashes", "next")

    def __init__(self, addrs, data, hashes, nxt):
        self.addrs, self.data, self.hashes, self.next = addrs, data, hashes, nxt


def _setup_child(remote: inject.Remote, shared: _Shared) -> int:
    """Give the child a private fd table and our memory file, mapped, and
    write the copy loop into its code page; returns where the file is
    mapped in the child.  Raises EngineError/OSError if it is refused."""
    child = remote.t.pid
    if procfs.status(child).get("Seccomp", "0") != "0":
        # the process's filter, inherited, could refuse (or kill the child for)
        # the calls below: suspended for the child alone (needs CAP_SYS_ADMIN)
        engine.check(lib.snp_set_ptrace_options(child, sc.PTRACE_O_EXITKILL | sc.PTRACE_O_SUSPEND_SECCOMP),
                     "suspend the seccomp filter of the copy-on-write child")
    t, code, scratch = remote.t, remote.base, remote.t.scratch
    # not dumpable: the program's user may no longer open /proc/CHILD/mem
    # (and write into our memory file through it)
    t.call("prctl(PR_SET_DUMPABLE)", sc.PRCTL, sc.PR_SET_DUMPABLE, 0)
    # a new, empty fd table, in one call: no file of the process gains a
    # reference or is flushed by a close (CLOSE_RANGE_UNSHARE over every fd)
    t.call("close_range(CLOSE_RANGE_UNSHARE)", sc.CLOSE_RANGE, 0, ALL_FDS, CLOSE_RANGE_UNSHARE)
    t.call("socketpair", sc.SOCKETPAIR, AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, scratch)
    theirs, other = struct.unpack("<ii", t.get(0, 8))
    pidfd = os.pidfd_open(child)
    try:
        ours = pidfd_getfd(pidfd, other)
    finally:
        os.close(pidfd)
    with socket.socket(fileno=ours) as s:
        socket.send_fds(s, [b"m"], [shared.fd])
    # struct msghdr at 0 (name, namelen, iov, iovlen, control, controllen,
    # flags), its iovec at 64, one byte of data at 96, the control buffer
    # (CMSG_SPACE(sizeof(int)) = 24 bytes) at 128
    t.put(0, struct.pack("<QI4xQQQQi4x", 0, 0, scratch + 64, 1, scratch + 128, 24, 0))
    t.put(64, struct.pack("<QQ", scratch + 96, 1))
    t.put(128, bytes(24))
    t.call("recvmsg", sc.RECVMSG, theirs, scratch, 0)
    clen, level, ctype, fd = struct.unpack("<QiiI", t.get(128, 20))
    if (level, ctype) != (socket.SOL_SOCKET, socket.SCM_RIGHTS) or clen < 20:
        raise OSError("the memory file did not arrive")
    base = t.call("mmap", sc.MMAP, 0, shared.size, sc.PROT_READ | sc.PROT_WRITE, sc.MAP_SHARED, fd, 0)
    t.call("close_range", sc.CLOSE_RANGE, 0, ALL_FDS, 0)
    buf = ffi.new("uint8_t[]", 512)
    k = engine.check(lib.snp_copy_loop_code(buf, 512), "copy loop")
    engine.mem_write(child, code + LOOP_OFFSET, ffi.buffer(buf, k)[:])
    engine.check(lib.snp_setsigmask(child, (1 << 64) - 1), f"block signals in {child}")
    return base


class ChildCopier:
    """Batches of the held child's present pages, copied by the child.
    Only the tracer thread of the child (the one that froze the process)
    may use it.  `who` names the dumped process in errors.  If the loop
    ever stops on a fault, that batch and the following ones are read
    through /proc/PID/mem, and `broken` says why."""

    def __init__(self, remote: inject.Remote, who: int, n: int = SLOT_PAGES):
        """remote: the held child, with the scratch area it inherited."""
        self.child, self.who, self.code, self.n = remote.t.pid, who, remote.base, n
        self.broken = ""
        self.shared = _take_shared(n)
        try:
            self.base = _setup_child(remote, self.shared)
        except BaseException:
            _give_shared(self.shared)
            raise
        self.c_addrs = [ffi.from_buffer("uint64_t[]", a) for a in self.shared.addrs]
        self.c_data = [ffi.from_buffer("uint8_t[]", d) for d in self.shared.data]
        self.c_hashes = [ffi.from_buffer("uint8_t[]", h) for h in self.shared.hashes]
        self.c_flags = [ffi.from_buffer("uint8_t[]", f) for f in self.shared.flags]
        self.flagged = [False] * SLOTS  # the loop filled the slot: its flags say which pages are zeros
        self.hasher = ThreadPoolExecutor(1, thread_name_prefix="page-hash")
        self.inject_fault = os.environ.get("SNAPSHOTD_COPY_LOOP") == "fault"  # tests only
        self.copying = False  # the child is running the loop

    def close(self) -> None:
        if self.shared is not None:
            self._copied()  # never hand the memory file back while the child writes to it
            self.hasher.shutdown(wait=True)
            _give_shared(self.shared)
            self.shared = None

    def _copied(self) -> int:
        """Wait for the copy in flight, if any: 0, or the loop's error."""
        if not self.copying:
            return 0
        self.copying = False
        return lib.snp_copy_loop_wait(self.child)

    def _start(self, k: int, got: int) -> None:
        """Have the child copy the got pages listed in slot k."""
        sh = self.shared
        a = sh.addrs[k][:got]
        first, count = page_runs(a)
        tbl = sh.tables[k][:len(first)]
        tbl[:, 0] = a[first]
        tbl[:, 1] = self.base + sh.data_offset(k) + first.astype(np.uint64) * engine.PAGE
        tbl[:, 2] = count
        if self.inject_fault:  # a source the child has not mapped: a real SIGSEGV in the loop
            self.inject_fault = False
            tbl[0, 0] = 0
        engine.check(lib.snp_copy_loop_start(self.child, self.code + LOOP_OFFSET, self.base + sh.table_offset(k),
                                             len(first), self.base + sh.flags_offset(k)),
                     f"start the copy loop in {self.child}")
        crashpoint("dump-copy-loop")
        self.flagged[k] = True

    def _read_memfile(self, reader, k: int, got: int) -> None:
        self.flagged[k] = False
        reader.read_list(self.c_addrs[k], self.shared.data[k], got, lib.SNP_PAGES_USE_MEMFILE, "pages")

    def _hash(self, k: int, got: int) -> None:
        lib.snp_hash_pages(self.c_data[k], got, self.c_hashes[k], lib.SNP_HASH_BLAKE3,
                           self.c_flags[k] if self.flagged[k] else ffi.NULL)

    def batches(self, reader, ranges, flags: int):
        """Like PageReader.batches, for the child that `reader` reads."""
        sh, n = self.shared, self.n
        free: queue.SimpleQueue = queue.SimpleQueue()
        for k in range(SLOTS):
            free.put(k)
        nexts = [ffi.new("uint64_t *") for _ in range(SLOTS)]
        find = (flags & lib.SNP_PAGES_ANON_ONLY) | lib.SNP_PAGES_ADDRS_ONLY
        spans = iter(ranges)
        where = [None, 0]  # current range's end, next address in it
        outstanding: list = []

        def launch():
            """Find the next batch's pages and start copying them:
            (slot, pages, start), or None at the end."""
            while where[0] is None or where[1] >= where[0]:
                span = next(spans, None)
                if span is None:
                    return None
                where[1], where[0] = span[0], span[1]
            k = free.get()
            start = where[1]
            got = lib.snp_collect_pages(self.child, -1, reader.pmfd, start, where[0], find, self.c_addrs[k],
                                        ffi.NULL, ffi.NULL, n, nexts[k])
            if got < 0:
                free.put(k)
            engine.check(got, f"read the page map of PID {self.who} at {start:#x}")
            where[1] = int(nexts[k][0])
            if got:
                sh.warm[k].wait()
                if sh.failed is not None and not self.broken:
                    self.broken = f"no memory for the copy loop's file ({sh.failed.strerror})"
                if self.broken:
                    self._read_memfile(reader, k, got)
                else:
                    self._start(k, got)
                    self.copying = True
            return k, got, start

        def copied(k: int, got: int, start: int) -> None:
            """Wait for the child's copy into slot k."""
            r = self._copied()
            if r == -errno.EFAULT:  # stopped on a fault (or a stop signal): read this batch ourselves
                self.broken = f"the copy loop in its copy-on-write child stopped at a fault in {start:#x}-{int(nexts[k][0]):#x}"
                self._read_memfile(reader, k, got)
            else:
                engine.check(r, f"copy loop in the copy-on-write child of PID {self.who}")

        # three stages, one batch each: the child copies, a thread hashes
        # (snp_hash_pages, two threads of its own), the caller stores
        hashing = None
        try:
            item = launch()
            while item is not None or hashing is not None:
                ready, hashing = hashing, None
                if item is not None:
                    k, got, start = item
                    if self.copying:
                        copied(k, got, start)
                    hashing = (item, self.hasher.submit(self._hash, k, got))
                    item = launch()  # the child copies the next batch meanwhile
                if ready is None:
                    continue
                (k, got, start), fut = ready
                fut.result()
                batch = Batch(_Slot(sh.addrs[k], sh.data[k], sh.hashes[k], nexts[k]), got, start)
                yield batch
                recycle(batch, k, free, outstanding)
        finally:
            self._copied()  # the slots are reused by the next call
            if hashing is not None:
                hashing[1].exception()
            for f in outstanding:
                f.exception()  # waits; errors reach the writer's caller at commit
