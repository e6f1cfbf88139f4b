"""Page packs: immutable HDF5 files of unique, compressed pages (docs/FORMAT.md).

A pack holds pages, each named by its hash (BLAKE3; SHA-256 in packs of
format 1), in zstd blocks of up to
PAGES_PER_BLOCK pages.  One writer writes one pack; nobody modifies it after
commit (temporary name, fsync, link, fsync of the directory).  Snapshots
reference pages as (pack, page index); the page hashes are kept next to the
blocks so that every read is verified and a store's page index can be rebuilt
from the packs alone.

Writing is a small pipeline: the caller fills 1 MiB blocks, worker threads
compress them (zstd releases the GIL), and a writer thread appends finished
blocks to the HDF5 file in order, so that memory reading, hashing,
compression and file writes overlap."""
from __future__ import annotations

import os
import queue
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import zstandard

from ..pagehash import HASH_NAME, HASH_SIZE, PAGE, hash_pages
from .._engine import lib
from ..faults import crashpoint
from ..spare import Spare
from .fsutil import h5py, publish_file, seal_file, temp_name

PACK_FORMAT = "snapshotd-pack"
PACK_VERSION = 2  # 2: pages named by BLAKE3 (1: SHA-256, still read)
_HASH_OF_VERSION = {1: "sha256", 2: "blake3"}
PAGES_PER_BLOCK = 256  # 1 MiB of pages per zstd frame: large enough to compress well
ZSTD_LEVEL = 1
WRITE_PIECE = 16 << 20  # HDF5 appends in pieces of this size: far fewer calls
BUFFERS = 24  # 1 MiB block buffers per pack writer
CHUNK = 128 << 10  # HDF5 chunk of the blocks dataset (a small pack wastes at most this)

_tls = threading.local()

try:  # python-zstandard's cffi binding, in its wheels: compresses into our buffers
    from zstandard import _cffi as _zc
except ImportError:  # pragma: no cover - a build without it: compress() and a copy
    _zc = None
# room for any compressed block (ZSTD_compressBound: n + n/256 for 1 MiB)
OUT_SIZE = PAGES_PER_BLOCK * PAGE * 257 // 256 + PAGE


def _compress_into(src, out: np.ndarray) -> int:
    """zstd-compress src (a bytes-like block) into out; returns the size.
    A fresh bytes object per block, as compress() returns, is fresh memory
    for every 1 MiB block, and faulting it in cost more CPU than the
    compression itself (the writer holds up to a few dozen blocks)."""
    if _zc is None:
        c = getattr(_tls, "cctx", None)
        if c is None:
            c = _tls.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        blob = c.compress(src)
        out[:len(blob)] = np.frombuffer(blob, dtype=np.uint8)
        return len(blob)
    lib_, ffi = _zc.lib, _zc.ffi
    cctx = getattr(_tls, "zcctx", None)
    if cctx is None:
        cctx = ffi.gc(lib_.ZSTD_createCCtx(), lib_.ZSTD_freeCCtx)
        if cctx == ffi.NULL or lib_.ZSTD_isError(lib_.ZSTD_CCtx_setParameter(cctx, lib_.ZSTD_c_compressionLevel,
                                                                          ZSTD_LEVEL)):
            raise MemoryError("zstd: cannot create a compression context")
        _tls.zcctx = cctx
    src = ffi.from_buffer(src)
    r = lib_.ZSTD_compress2(cctx, ffi.from_buffer(out), len(out), src, len(src))
    if lib_.ZSTD_isError(r):
        raise RuntimeError("zstd: " + ffi.string(lib_.ZSTD_getErrorName(r)).decode())
    return r


def _decompressor() -> zstandard.ZstdDecompressor:
    """One per thread: a zstd context must not be used by two at once
    (restore decompresses blocks in several threads)."""
    d = getattr(_tls, "dctx", None)
    if d is None:
        d = _tls.dctx = zstandard.ZstdDecompressor()
    return d


# block and output buffers of one finished pack writer, for the next one
# in this process (the daemon writes a pack per snapshot)
_spare = Spare()


def _new_buffers() -> tuple[np.ndarray, np.ndarray]:
    return (np.empty((BUFFERS, PAGES_PER_BLOCK, PAGE), dtype=np.uint8),
            np.empty((BUFFERS, OUT_SIZE), dtype=np.uint8))


class DamagedError(Exception):
    """Stored data does not match its hash, or is missing."""


class FormatError(Exception):
    """A file that is not what it should be, or one written by a newer snapshotd."""


def check_format(path: str, attrs, name: str, version: int) -> int:
    if attrs.get("format") != name:
        raise FormatError(f"{path}: not a {name} file")
    if "format_version" not in attrs:
        raise FormatError(f"{path}: no format_version attribute; not a complete file")
    v = int(attrs["format_version"])
    if v > version:
        raise FormatError(f"{path}: format version {v} is newer than this snapshotd reads ({version}); "
                          "upgrade snapshotd")
    return v


def check_pack(path: str, attrs) -> str:
    """A pack this snapshotd can read (format, version, codec and hash);
    returns the name of its page hash."""
    v = check_format(path, attrs, PACK_FORMAT, PACK_VERSION)
    for k, want in (("codec", "zstd"), ("hash", _HASH_OF_VERSION.get(v))):
        if attrs.get(k) != want:
            raise FormatError(f"{path}: pack {k} {attrs.get(k)!r} is not {want!r}; upgrade snapshotd")
    return _HASH_OF_VERSION[v]


def read_pack_hashes(path: str) -> tuple[float, np.ndarray]:
    """(creation time, page hashes) of a committed pack, for the page index."""
    with h5py.File(path, "r", locking=False) as f:
        check_pack(path, f.attrs)
        return float(f.attrs.get("created", 0)), f["hash"][:]


class PackWriter:
    """Append unique pages; seal() and publish() commit the pack.  Not thread-safe:
    one caller adds pages, internal threads compress and write."""

    def __init__(self, final_path: str, pack_id: str):
        self.final_path = final_path
        self.pack_id = pack_id
        self.tmp_path = temp_name(final_path)
        self.h5 = h5py.File(self.tmp_path, "w", libver=("v110", "latest"), locking=False)
        os.chmod(self.tmp_path, 0o600)
        self.blocks = self.h5.create_dataset("blocks", (0,), maxshape=(None,), dtype=np.uint8,
                                             chunks=(CHUNK,))
        self.block_offsets = [0]
        self.hashes: list[np.ndarray] = []
        self.npages = 0
        # block buffers, allocated in one piece (large numpy arrays get
        # transparent huge pages: fresh small pages are slow to fault in on VMs),
        # recycled by the writer thread (the queue bounds blocks in flight) and
        # kept for the next pack writer of this process
        self.arena, self.outs = _spare.take(_new_buffers)
        self.free: queue.SimpleQueue = queue.SimpleQueue()
        for b in self.arena[1:]:
            self.free.put(b)
        self.buf = self.arena[0]
        self.nbuf = 0
        # compressed blocks, until the writer thread has copied them; as many
        # as the input buffers (compressions wait for one if the writer lags)
        self.free_out: queue.SimpleQueue = queue.SimpleQueue()
        for o in self.outs:
            self.free_out.put(o)
        self.compressors = ThreadPoolExecutor(max_workers=2, thread_name_prefix="zstd")
        self.todo: queue.Queue = queue.Queue(maxsize=64)  # compressed-block futures, in block order
        self.error: BaseException | None = None
        self.borrowed: list = []  # compressions reading the caller's data (add(borrow=True))
        self.writer = threading.Thread(target=self._write_loop, name="pack-writer", daemon=True)
        self.writer.start()

    # -- adding pages --
    def add(self, data: np.ndarray, hashes: np.ndarray, rows: np.ndarray | None = None,
            borrow: bool = False) -> int:
        """Append pages data[rows] (data: (n, 4096); all rows if None, else
        ascending) with their hashes (one per appended page); returns the
        index of the first one in this pack.  borrow: the caller keeps data
        unchanged until the futures take_borrowed() hands it are done, so
        whole blocks are compressed where they
        lie (consecutive rows) or gathered by the compressing thread, not
        copied by the caller's (the copy cost as much as the compression)."""
        first = self.npages
        rows = np.arange(len(data)) if rows is None else rows
        n = len(rows)
        if not n:
            return first
        if rows[-1] >= len(data):  # ascending: the gathers (mode="clip") would not notice
            raise IndexError(f"page row {rows[-1]} of {len(data)}")
        self.hashes.append(np.array(hashes, dtype=np.uint8).reshape(n, HASH_SIZE))
        self.npages += n
        i = 0
        while i < n:
            if borrow and n - i >= PAGES_PER_BLOCK - self.nbuf:
                # a block is complete: the compressing thread gathers its rows
                # (those of this call after the ones already in self.buf)
                sel = rows[i:i + PAGES_PER_BLOCK - self.nbuf]
                r0 = int(sel[0])
                out = self._take_out()
                if self.nbuf == 0 and sel[-1] - r0 == PAGES_PER_BLOCK - 1:  # compressed where it lies
                    fut = self.compressors.submit(_compress_into, memoryview(data[r0:r0 + PAGES_PER_BLOCK]).cast("B"),
                                                  out)
                else:
                    fut = self.compressors.submit(self._gather_compress_free, data, sel, self.buf, out, self.nbuf)
                    self.buf, self.nbuf = self.free.get(), 0
                self.borrowed.append(fut)
                self.todo.put((fut, out))
                i += len(sel)
                continue
            take = min(PAGES_PER_BLOCK - self.nbuf, n - i)
            np.take(data, rows[i:i + take], axis=0, out=self.buf[self.nbuf:self.nbuf + take], mode="clip")
            self.nbuf += take
            i += take
            if self.nbuf == PAGES_PER_BLOCK:
                self._submit()
        return first

    def take_borrowed(self) -> list:
        """The compressions reading borrowed data since the last call."""
        out, self.borrowed = self.borrowed, []
        return out

    def _submit(self) -> None:
        if self.error:
            raise self.error
        buf, n = self.buf, self.nbuf
        out = self._take_out()
        fut = self.compressors.submit(self._compress_and_free, buf, n, out)
        self.todo.put((fut, out))  # blocks only when the writer thread is far behind
        self.buf = self.free.get()  # waits while every buffer is being compressed
        self.nbuf = 0

    def _take_out(self) -> np.ndarray:
        """A buffer for the next block's compressed bytes, taken in block
        order (so a wait here is only for earlier blocks, which the writer
        thread copies out in that order); it gives it back."""
        if self.error:
            raise self.error
        return self.free_out.get()

    def _gather_compress_free(self, data: np.ndarray, rows: np.ndarray, buf: np.ndarray, out: np.ndarray,
                              start: int = 0) -> int:
        """A block: buf[:start] already filled, then borrowed pages
        data[rows], copied and compressed in a compressing thread (numpy's
        take releases the GIL)."""
        try:
            np.take(data, rows, axis=0, out=buf[start:], mode="clip")
            return _compress_into(memoryview(buf).cast("B"), out)
        finally:
            self.free.put(buf)

    def _compress_and_free(self, buf: np.ndarray, n: int, out: np.ndarray) -> int:
        """Compress a block; its buffer is free again at once (the writer
        thread may be blocked in a write: it must not hold the buffers)."""
        try:
            return _compress_into(memoryview(buf[:n]).cast("B"), out)
        finally:
            self.free.put(buf)

    def _write_loop(self) -> None:
        """Compressed blocks, in order, into one reused buffer (a fresh
        buffer per piece is fresh memory: slow to fault in on VMs), written
        a piece at a time as whole HDF5 chunks straight from it
        (H5Dwrite_chunk: no chunk cache, no copy, no fill); the part of the
        last chunk past the data is zeros, outside the dataset's extent."""
        piece = np.empty(WRITE_PIECE + 2 * PAGES_PER_BLOCK * PAGE + CHUNK, dtype=np.uint8)
        n = 0  # bytes in piece, from offset `base` of /blocks (a chunk boundary)
        base = 0
        syncfd = os.open(self.tmp_path, os.O_RDONLY | os.O_CLOEXEC)
        item = ()
        try:
            while True:
                item = self.todo.get()
                if item is not None:
                    fut, out = item
                    try:
                        size = fut.result()  # <= OUT_SIZE: piece has room (n < WRITE_PIECE here)
                        piece[n:n + size] = out[:size]
                    finally:
                        self.free_out.put(out)
                    n += size
                    self.block_offsets.append(self.block_offsets[-1] + size)
                if n and (n >= WRITE_PIECE or item is None):
                    whole = n - n % CHUNK if item is not None else -(-n // CHUNK) * CHUNK
                    piece[n:whole] = 0
                    self.blocks.resize((self.block_offsets[-1],))
                    for c in range(0, whole, CHUNK):
                        self.blocks.id.write_direct_chunk((base + c,), piece[c:c + CHUNK])
                    base += whole
                    rest = max(0, n - whole)
                    piece[:rest] = piece[whole:whole + rest]
                    n = rest
                    crashpoint("pack-write")
                    lib.snp_start_writeback(syncfd)  # the fsync at commit then finds little left
                if item is None:
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the caller at commit
            self.error = e
            while item is not None:  # keep draining so the producer never blocks (unless
                item = self.todo.get()  # it was writing the last piece: nothing follows)
                if item is not None:
                    if not item[0].cancelled():  # abort() cancels what has not started
                        item[0].exception()
                    self.free_out.put(item[1])
        finally:
            os.close(syncfd)

    @property
    def stored_bytes(self) -> int:
        return self.block_offsets[-1]

    # -- commit --
    def seal(self) -> None:
        """The first half of a commit (publish() is the second): blocks
        written, index datasets added, file closed and fsynced under its
        temporary name (abort() still removes it)."""
        if self.nbuf:
            self._submit()
        self.todo.put(None)
        self.writer.join()
        self.compressors.shutdown()
        self._spare_buffers()
        if self.error:
            raise self.error
        h5 = self.h5
        # fletcher32: HDF5's own checksum, so damaged metadata is an error, not a misread
        hashes = np.concatenate(self.hashes) if self.hashes else np.empty((0, HASH_SIZE), np.uint8)
        h5.create_dataset("hash", data=hashes, chunks=(max(1, min(len(hashes), 1 << 15)), HASH_SIZE),
                          fletcher32=True)
        h5.create_dataset("block_offset", data=np.asarray(self.block_offsets, dtype=np.uint64),
                          chunks=(min(len(self.block_offsets), 1 << 16),), fletcher32=True)
        a = h5.attrs
        a["format"] = PACK_FORMAT
        a["format_version"] = PACK_VERSION
        a["id"] = self.pack_id
        a["pages"] = self.npages
        a["pages_per_block"] = PAGES_PER_BLOCK
        a["codec"] = "zstd"
        a["hash"] = HASH_NAME
        a["stored_bytes"] = self.stored_bytes
        a["created"] = time.time()
        a["hostname"] = socket.gethostname()
        h5.close()
        seal_file(self.tmp_path)

    def _spare_buffers(self) -> None:
        """The buffers are idle (writer and compressions done): keep them."""
        if self.arena is not None:
            _spare.give((self.arena, self.outs))
            self.arena = self.outs = self.buf = None

    def publish(self) -> str:
        """Link the sealed pack under its name, durably."""
        publish_file(self.tmp_path, self.final_path, "pack")
        return self.final_path

    def abort(self) -> None:
        try:
            self.todo.put(None)
            self.writer.join(timeout=10)
            self.compressors.shutdown(cancel_futures=True)
            if not self.writer.is_alive():
                self._spare_buffers()
            self.h5.close()
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass
        try:
            os.unlink(self.tmp_path)
        except FileNotFoundError:
            pass


class PackReader:
    """Read and verify pages of one pack.  Decompressed blocks are cached
    (a few hundred MiB at most)."""

    CACHE_BLOCKS = 64

    def __init__(self, path: str):
        self.path = path
        self.name = os.path.basename(path)
        try:
            self.h5 = h5py.File(path, "r", locking=False)
        except FileNotFoundError:
            raise DamagedError(f"page pack {self.name} is missing") from None
        except OSError as e:
            raise DamagedError(f"page pack {self.name} is unreadable ({e})") from None
        try:
            self.algo = check_pack(path, self.h5.attrs)
            self.offsets = self.h5["block_offset"][:]
            self.hashes = self.h5["hash"][:]
            self.ppb = int(self.h5.attrs["pages_per_block"])
        except (OSError, KeyError, ValueError) as e:
            self.h5.close()
            raise DamagedError(f"page pack {self.name}: metadata unreadable ({e})") from None
        self.npages = len(self.hashes)
        self._blocks = self.h5["blocks"]
        self._cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.h5.close()

    def block(self, b: int) -> np.ndarray:
        """Pages of block b (n, 4096), checked against their hashes."""
        blk = self._cache.get(b)
        if blk is not None:
            return blk
        if b + 1 >= len(self.offsets):
            raise DamagedError(f"{self.name}: block {b} missing")
        lo, hi = int(self.offsets[b]), int(self.offsets[b + 1])
        first = b * self.ppb
        count = min(self.ppb, self.npages - first)
        try:
            with self._lock:  # h5py is not reentrant across threads for one file
                raw = self._blocks[lo:hi].tobytes()
        except (OSError, ValueError) as e:
            raise DamagedError(f"{self.name}: block {b} (bytes {lo}-{hi}) unreadable ({e})") from None
        try:
            out = _decompressor().decompress(raw, max_output_size=count * PAGE)
        except zstandard.ZstdError as e:
            raise DamagedError(f"{self.name}: block {b} (bytes {lo}-{hi}) does not decompress ({e})") from None
        pages = np.frombuffer(out, dtype=np.uint8).reshape(-1, PAGE)
        if len(pages) != count:
            raise DamagedError(f"{self.name}: block {b} (bytes {lo}-{hi}) holds {len(pages)} pages, not {count}")
        bad = np.nonzero((hash_pages(pages, self.algo) != self.hashes[first:first + count]).any(axis=1))[0]
        if len(bad):
            raise DamagedError(f"{self.name}: block {b} (bytes {lo}-{hi}): {len(bad)} page(s) do not match "
                               f"their {self.algo} hash (first: page {first + int(bad[0])})")
        if len(self._cache) >= self.CACHE_BLOCKS:
            self._cache.clear()
        self._cache[b] = pages
        return pages

    def verify(self) -> list[str]:
        problems = []
        for b in range(len(self.offsets) - 1):
            try:
                self.block(b)
            except DamagedError as e:
                problems.append(str(e))
            self._cache.clear()
        if len(self.offsets) - 1 != -(-self.npages // self.ppb):
            problems.append(f"{self.name}: {len(self.offsets) - 1} blocks for {self.npages} pages")
        return problems
