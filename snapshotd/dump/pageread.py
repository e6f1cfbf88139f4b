"""Reading another process's present pages in batches, one batch ahead.

The engine (snp_collect_pages) finds present pages with /proc/PID/pagemap,
reads them (process_vm_readv, or /proc/PID/mem) and hashes the non-zero ones,
releasing the GIL.  A reader thread fills one buffer set while the caller
stores the previous batch, so reading and hashing overlap with deduplication,
compression and writes.  Buffers are allocated once and reused: fresh memory
is slow to fault in on this kind of VM."""
from __future__ import annotations

import os
import queue
import threading

import numpy as np

from ..kernel import engine
from .._engine import ffi, lib
from ..spare import Spare

PAGES_PER_READ = 4096  # 16 MiB a batch (the engine works through it 1 MiB at a time)
BUFFERS = 3  # one being read into, one being stored, one still being compressed


class _Buffers:
    def __init__(self, n: int):
        self.addrs = np.empty(n, dtype=np.uint64)
        self.data = np.empty(n * engine.PAGE, dtype=np.uint8)
        self.hashes = np.empty((n, 32), dtype=np.uint8)
        self.c = (ffi.from_buffer("uint64_t[]", self.addrs), ffi.from_buffer("uint8_t[]", self.data),
                  ffi.from_buffer("uint8_t[]", self.hashes))
        self.next = ffi.new("uint64_t *")


# One set of buffers kept between readers (a dump reads through several)
_spare = Spare()
_pool_lock = threading.Lock()  # _lent_pool's


# Buffers of pages read while frozen and stored after the release (lent to
# the writer), reused by later dumps of this process (the daemon's): the
# copy happens while the process is frozen, and is several times faster
# into memory already faulted in.
_lent_pool: list = []
LENT_POOL_MAX = 4


_lent_high = [0]  # the most pages one dump of this process lent
# (the pool is shared by all dumps of the process: sized for the largest)


def prewarm_lent_buffers(expect: int = 0, n: int = PAGES_PER_READ) -> None:
    """Before a freeze: faulted-in room in the pool for as many pages as
    a dump of this process ever lent, or `expect` (a guess: the first
    tracked dump of a process), at most LENT_POOL_MAX buffers of n pages."""
    want = min(max(_lent_high[0], expect), LENT_POOL_MAX * n)
    if not want:
        return
    with _pool_lock:
        mine = [b for b in _lent_pool if len(b) == n * engine.PAGE]
        while len(mine) * n < want:
            mine.append(np.empty(n * engine.PAGE, dtype=np.uint8))
            _lent_pool.append(mine[-1])
        for i, b in enumerate(mine):  # fault the pages in now, not while frozen
            k = min(n, want - i * n)
            if k <= 0:
                break
            b[: k * engine.PAGE : engine.PAGE] = 0


def note_lent(pages: int) -> None:
    _lent_high[0] = max(_lent_high[0], pages)


def take_lent_buffer(n: int) -> np.ndarray:
    with _pool_lock:
        for i, b in enumerate(_lent_pool):
            if len(b) == n * engine.PAGE:
                return _lent_pool.pop(i)
    return np.empty(n * engine.PAGE, dtype=np.uint8)


def give_back_when_done(futures: list, bufs: list) -> None:
    """Return buffers from take_lent_buffer to the pool (as many as it
    keeps) once the futures reading them are done."""
    def back():
        with _pool_lock:
            _lent_pool.extend(bufs[: max(0, LENT_POOL_MAX - len(_lent_pool))])
    if not bufs:
        return
    if futures:
        _release_when_done(futures, back)
    else:
        back()


def _release_when_done(futures: list, release) -> None:
    """Call release() once every future is done (from the thread that
    finishes the last one, or now)."""
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_f):
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            release()
    for f in futures:
        f.add_done_callback(one_done)


def recycle(batch: "Batch", k: int, free, outstanding: list) -> None:
    """The caller is done with batch (buffer k): k goes back on the free
    queue once the futures the batch holds are done (kept in outstanding,
    to be waited for at the end)."""
    pending = [f for f in batch.held if not f.done()]
    if pending:
        outstanding.extend(pending)
        _release_when_done(pending, lambda: free.put(k))
    else:
        free.put(k)


class Batch:
    """Pages [start, next) of one call: got present pages."""
    __slots__ = ("addrs", "data", "hashes", "got", "start", "next", "held")

    def __init__(self, b: _Buffers, got: int, start: int):
        self.addrs, self.data, self.hashes = b.addrs[:got], b.data[: got * engine.PAGE], b.hashes[:got]
        self.got, self.start, self.next = got, start, int(b.next[0])
        self.held: list = []

    def hold(self, futures) -> None:
        """The buffer is read by these futures (compressions of borrowed
        pages): it is reused only once they are done, and the caller need
        not wait for them."""
        self.held.extend(futures)


class PageReader:
    """Present pages of process `source` (the dumped process or its
    copy-on-write child); `who` names the dumped process in errors."""

    def __init__(self, source: int, who: int, n: int = PAGES_PER_READ):
        self.source, self.who, self.n = source, who, n
        self.bufs = _spare.take(lambda: [_Buffers(n) for _ in range(BUFFERS)],
                                lambda bufs: bufs[0].addrs.shape[0] == n)
        self.memfd = os.open(f"/proc/{source}/mem", os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.pmfd = os.open(f"/proc/{source}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(self.memfd)
            raise

    def read_list(self, addrs, dst: np.ndarray, k: int, flags: int, what: str = "written pages") -> None:
        """Read the k pages at addrs (a uint64_t[] cdata) into dst."""
        engine.check(lib.snp_read_page_list(self.source, self.memfd, addrs, ffi.from_buffer("uint8_t[]", dst), k,
                                            flags & lib.SNP_PAGES_USE_MEMFILE),
                     f"read {what} of PID {self.who}")

    def close(self) -> None:
        os.close(self.memfd)
        os.close(self.pmfd)
        if self.bufs:
            _spare.give(self.bufs)
        self.bufs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def batches(self, ranges, flags: int):
        """Yield a Batch for each engine call over the (start, end) ranges.
        A batch's arrays are valid until the next one is asked for, or until
        the futures it was told to hold are done.  When the generator ends,
        no held future is running any more."""
        free: queue.SimpleQueue = queue.SimpleQueue()
        ready: queue.SimpleQueue = queue.SimpleQueue()
        for k in range(len(self.bufs)):
            free.put(k)
        stop = threading.Event()
        outstanding: list = []

        def produce():
            try:
                for start, end in ranges:
                    a = start
                    while a < end:
                        k = free.get()
                        if stop.is_set():
                            return
                        b = self.bufs[k]
                        got = lib.snp_collect_pages(self.source, self.memfd, self.pmfd, a, end, flags,
                                                    *b.c, self.n, b.next)
                        engine.check(got, f"read memory of PID {self.who} at {a:#x}")
                        ready.put((k, Batch(b, got, a)))
                        a = int(b.next[0])
                ready.put(None)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                ready.put(e)

        th = threading.Thread(target=produce, name="page-reader", daemon=True)
        th.start()
        try:
            while True:
                item = ready.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                k, batch = item
                yield batch
                recycle(batch, k, free, outstanding)
        finally:
            for f in outstanding:
                f.exception()  # waits; errors reach the writer's caller at commit
            stop.set()
            for _ in self.bufs:
                free.put(-1)
            th.join()
