"""One snapshot = one immutable HDF5 file (layout: docs/FORMAT.md).

SnapshotWriter takes process metadata (the image) and page data separately:
pages go into a content-addressed pool of zstd-compressed blocks, each
process's address space is a list (page address, pool reference).  The file
is written under a temporary name, fsynced, renamed, and the directory
fsynced: a snapshot is either complete and visible, or absent."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import zstandard

from ..pagehash import HASH_SIZE, PAGE, ZERO_HASH, hash_pages

os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")  # shared filesystems: no flock
import h5py  # noqa: E402  (after the locking switch)

FORMAT_NAME = "snapshotd-snapshot"
FORMAT_VERSION = 1
PAGES_PER_BLOCK = 256  # 1 MiB of pages per zstd frame: large enough to compress well
ZERO_REF = np.uint64(0xFFFFFFFFFFFFFFFF)  # page reference meaning "all zero"
ZSTD_LEVEL = 1

_tls = threading.local()


def _compress(buf: bytes) -> bytes:
    c = getattr(_tls, "cctx", None)
    if c is None:
        c = _tls.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return c.compress(buf)


class FormatError(Exception):
    """A file that is not a snapshot, or one written by a newer snapshotd."""


class DamagedError(Exception):
    """Stored data does not match its hash, or is missing."""


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# h5py objects of files whose close failed (e.g. ENOSPC while flushing): with
# HDF5 2.0 freeing them crashes the process (segfault in the id release), so
# they are kept until exit; a process that has any should leave with os._exit.
UNCLOSABLE: list = []


class SnapshotWriter:
    def __init__(self, final_path: str, attrs: dict):
        self.final_path = final_path
        d = os.path.dirname(final_path)
        self.tmp_path = os.path.join(d, f".{os.path.basename(final_path)}.tmp-{os.getpid()}")
        try:
            self.h5 = h5py.File(self.tmp_path, "w", libver=("v110", "latest"), locking=False)
        except BaseException:  # e.g. ENOSPC: HDF5 may have created the file already
            try:
                os.unlink(self.tmp_path)
            except FileNotFoundError:
                pass
            raise
        self.attrs = attrs
        self.index: dict[bytes, int] = {ZERO_HASH: int(ZERO_REF)}  # page hash -> pool reference
        self.pool_hashes: list[np.ndarray] = []
        self.npool = 0
        self.blocks = self.h5.create_dataset("pool/blocks", (0,), maxshape=(None,), dtype=np.uint8, chunks=(256 << 10,))
        self.block_offsets = [0]
        self.outbuf = bytearray()  # compressed blocks not yet written
        self.exec = ThreadPoolExecutor(max_workers=2)
        self.futures: deque = deque()  # (future, buffer) in block order
        self.free_bufs: list[np.ndarray] = []
        self.buf = self._new_buf()  # the block being filled
        self.nbuf = 0
        self.page_tables: dict[int, list] = {}
        self.bytes_in = 0

    # -- pages --
    def _new_buf(self) -> np.ndarray:
        return self.free_bufs.pop() if self.free_bufs else np.empty((PAGES_PER_BLOCK, PAGE), dtype=np.uint8)

    def _refs_for(self, data: np.ndarray, hashes: np.ndarray) -> np.ndarray:
        """Pool references for pages data (n, 4096) with their hashes, adding
        contents not yet in the pool."""
        index = self.index
        get = index.get
        refs = []
        new_rows = []
        npool = self.npool
        for i, h in enumerate(hashes.view(f"V{HASH_SIZE}").ravel().tolist()):
            r = get(h)
            if r is None:
                r = index[h] = npool
                npool += 1
                new_rows.append(i)
            refs.append(r)
        if new_rows:
            rows = np.asarray(new_rows)
            self.pool_hashes.append(hashes[rows])
            self.npool = npool
            self._add_to_pool(data, rows)
        return np.asarray(refs, dtype=np.uint64)

    def _add_to_pool(self, data: np.ndarray, rows: np.ndarray) -> None:
        self.bytes_in += len(rows) * PAGE
        i = 0
        while i < len(rows):
            take = min(PAGES_PER_BLOCK - self.nbuf, len(rows) - i)
            np.take(data, rows[i : i + take], axis=0, out=self.buf[self.nbuf : self.nbuf + take])
            self.nbuf += take
            i += take
            if self.nbuf == PAGES_PER_BLOCK:
                self._flush_block()

    def _flush_block(self) -> None:
        buf, n = self.buf, self.nbuf
        self.futures.append((self.exec.submit(_compress, memoryview(buf[:n]).cast("B")), buf))
        self.buf, self.nbuf = self._new_buf(), 0
        self._drain(wait=True)

    def _drain(self, wait) -> None:
        """Write finished blocks in order; with wait, until at most 4 are in
        flight (none with wait="all")."""
        keep = 0 if wait == "all" else 4
        while self.futures and ((wait and len(self.futures) > keep) or self.futures[0][0].done()):
            fut, buf = self.futures.popleft()
            blob = fut.result()
            self.free_bufs.append(buf)
            self.outbuf += blob
            self.block_offsets.append(self.block_offsets[-1] + len(blob))
        if self.outbuf and (len(self.outbuf) >= (16 << 20) or wait == "all"):
            off = self.blocks.shape[0]  # HDF5 writes in large pieces: far fewer calls
            self.blocks.resize((off + len(self.outbuf),))
            self.blocks[off:] = np.frombuffer(self.outbuf, dtype=np.uint8)
            self.outbuf = bytearray()

    def add_pages(self, pid: int, addrs: np.ndarray, data, hashes: np.ndarray | None = None) -> None:
        """Pages of process pid: addrs (n,) uint64, data n*4096 bytes (may be
        reused by the caller once this returns)."""
        data = np.frombuffer(data, dtype=np.uint8).reshape(-1, PAGE)
        if hashes is None:
            hashes = hash_pages(data)
        refs = self._refs_for(data, hashes)
        self.page_tables.setdefault(pid, []).append((np.array(addrs, dtype=np.uint64), refs))

    def add_file(self, key: str, content: bytes) -> None:
        """File contents (deleted files, memfd, tmpfs): stored as pages too."""
        size = len(content)
        padded = content + bytes(-size % PAGE)
        data = np.frombuffer(padded, dtype=np.uint8).reshape(-1, PAGE)
        refs = self._refs_for(data, hash_pages(data)) if len(data) else np.empty(0, np.uint64)
        ds = self.h5.create_dataset(f"files/{key}/ref", data=refs)
        ds.parent.attrs["size"] = size

    # -- commit --
    def commit(self, image: dict) -> str:
        if self.nbuf:
            self._flush_block()
        self._drain(wait="all")
        self.exec.shutdown()
        h5 = self.h5
        pool = h5.require_group("pool")
        hashes = np.concatenate(self.pool_hashes) if self.pool_hashes else np.empty((0, HASH_SIZE), np.uint8)
        pool.create_dataset("hash", data=hashes)
        pool.create_dataset("block_offset", data=np.asarray(self.block_offsets, dtype=np.uint64))
        pool.attrs["pages_per_block"] = PAGES_PER_BLOCK
        pool.attrs["codec"] = "zstd"
        for pid, parts in self.page_tables.items():
            addrs = np.concatenate([a for a, _ in parts])
            refs = np.concatenate([r for _, r in parts])
            order = np.argsort(addrs, kind="stable")
            g = h5.create_group(f"pages/{pid}")
            g.create_dataset("addr", data=addrs[order])
            g.create_dataset("ref", data=refs[order])
        h5.create_dataset("image", data=json.dumps(image, separators=(",", ":")), dtype=h5py.string_dtype())
        a = h5.attrs
        for k, v in self.attrs.items():
            a[k] = v
        a["format"] = FORMAT_NAME
        a["format_version"] = FORMAT_VERSION
        a["created"] = time.time()
        a["hostname"] = socket.gethostname()
        a["stored_bytes"] = int(self.block_offsets[-1])
        a["unique_pages"] = int(self.npool)
        try:
            h5.close()
        except BaseException:
            self._close_failed = True
            raise
        with open(self.tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        # link(2) never replaces an existing snapshot (rename would)
        try:
            os.link(self.tmp_path, self.final_path)
        finally:
            os.unlink(self.tmp_path)
        fsync_dir(os.path.dirname(self.final_path))
        return self.final_path

    def abort(self) -> None:
        try:
            self.exec.shutdown(cancel_futures=True)
            if not getattr(self, "_close_failed", False):
                self.h5.close()
        except Exception:
            self._close_failed = True
        if getattr(self, "_close_failed", False):
            UNCLOSABLE.append((self.h5, self.blocks))
        try:
            os.unlink(self.tmp_path)
        except FileNotFoundError:
            pass


class SnapshotReader:
    def __init__(self, path: str):
        self.path = path
        try:
            self.h5 = h5py.File(path, "r", locking=False)
        except OSError as e:
            raise FormatError(f"{path}: not a readable HDF5 file ({e})") from None
        a = self.h5.attrs
        if a.get("format") != FORMAT_NAME:
            raise FormatError(f"{path}: not a snapshotd snapshot")
        if "format_version" not in a:
            raise FormatError(f"{path}: no format_version attribute; not a complete snapshot")
        v = int(a["format_version"])
        if v > FORMAT_VERSION:
            raise FormatError(f"{path}: format version {v} is newer than this snapshotd reads ({FORMAT_VERSION}); upgrade snapshotd")
        self.attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in a.items()}
        self._image = None
        self._block_cache: dict[int, np.ndarray] = {}
        self._dctx = zstandard.ZstdDecompressor()
        self._offsets = self.h5["pool/block_offset"][:]
        self._hashes = self.h5["pool/hash"][:]
        self._ppb = int(self.h5["pool"].attrs["pages_per_block"])

    def close(self):
        self.h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def image(self) -> dict:
        if self._image is None:
            raw = self.h5["image"][()]
            self._image = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        return self._image

    def page_table(self, pid: int) -> tuple[np.ndarray, np.ndarray]:
        g = self.h5.get(f"pages/{pid}")
        if g is None:
            return np.empty(0, np.uint64), np.empty(0, np.uint64)
        return g["addr"][:], g["ref"][:]

    def _block(self, b: int) -> np.ndarray:
        blk = self._block_cache.get(b)
        if blk is not None:
            return blk
        if b + 1 >= len(self._offsets):
            raise DamagedError(f"{self.path}: page block {b} missing")
        lo, hi = int(self._offsets[b]), int(self._offsets[b + 1])
        first = b * self._ppb
        count = min(self._ppb, len(self._hashes) - first)
        try:
            raw = self._dctx.decompress(self.h5["pool/blocks"][lo:hi].tobytes(), max_output_size=count * PAGE)
        except zstandard.ZstdError as e:
            raise DamagedError(f"{self.path}: page block {b} does not decompress ({e})") from None
        pages = np.frombuffer(raw, dtype=np.uint8).reshape(-1, PAGE)
        if len(pages) != count or not np.array_equal(hash_pages(pages), self._hashes[first : first + count]):
            raise DamagedError(f"{self.path}: page block {b} does not match its hashes")
        if len(self._block_cache) > 64:
            self._block_cache.clear()
        self._block_cache[b] = pages
        return pages

    def gather(self, refs: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Page contents (n, 4096) for pool references; ZERO_REF gives zeros.
        Every block read is checked against the stored page hashes.  `out`
        may be a reused buffer of at least n pages."""
        if out is None:
            out = np.empty((len(refs), PAGE), dtype=np.uint8)
        out = out[: len(refs)]
        nz = refs != ZERO_REF
        if not nz.all():
            out[~nz] = 0
        if not nz.any():
            return out
        idx = np.nonzero(nz)[0]
        r = refs[idx]
        if int(r.max()) >= len(self._hashes):
            raise DamagedError(f"{self.path}: page reference out of range")
        blocks = r // self._ppb
        for b in np.unique(blocks):
            sel = blocks == b
            pages = self._block(int(b))
            out[idx[sel]] = pages[(r[sel] - b * self._ppb).astype(np.int64)]
        return out

    def iter_pages(self, pid: int, chunk: int = 16384):
        """(addrs, data (n, 4096)) in address order, chunk pages at a time."""
        addrs, refs = self.page_table(pid)
        if not len(addrs):
            return
        # two reused buffers (fresh memory is slow to fault in): the next chunk
        # is decompressed and verified in a thread while the caller uses this one
        bufs = [np.empty((min(chunk, len(addrs)), PAGE), dtype=np.uint8) for _ in range(2)]
        starts = range(0, len(addrs), chunk)
        with ThreadPoolExecutor(max_workers=1) as ex:
            fut = ex.submit(self.gather, refs[:chunk], bufs[0])
            for k, i in enumerate(starts):
                data = fut.result()
                if i + chunk < len(addrs):
                    fut = ex.submit(self.gather, refs[i + chunk : i + 2 * chunk], bufs[(k + 1) % 2])
                yield addrs[i : i + chunk], data

    def file_content(self, key: str) -> bytes:
        g = self.h5.get(f"files/{key}")
        if g is None:
            raise DamagedError(f"{self.path}: saved file contents {key} missing")
        data = self.gather(g["ref"][:])
        return data.tobytes()[: int(g.attrs["size"])]

    def verify(self) -> list[str]:
        """Re-hash every stored block; return the problems found."""
        problems = []
        nblocks = len(self._offsets) - 1
        for b in range(nblocks):
            try:
                self._block(b)
            except DamagedError as e:
                problems.append(str(e))
            self._block_cache.clear()
        try:
            self.image()
        except Exception as e:  # noqa: BLE001 - report any decode failure
            problems.append(f"{self.path}: image unreadable ({e})")
        return problems
