"""The store's page index: hash of a page -> where it is stored.

It is never written to disk: it is rebuilt from the `hash` dataset of every
committed pack (a few MiB per GiB of unique pages), so it cannot go stale or
be lost.  A page reference is a 64-bit integer: (pack slot << 32) | index of
the page in that pack; slots number the packs this index knows.  The
all-zero page has the reserved reference ZERO_REF and is never stored."""
from __future__ import annotations

import hashlib
import os
import threading

import numpy as np

from .._engine import ffi, lib
from ..pagehash import HASH_SIZE, PAGE, blake3_page_list

ZERO_REF = 0xFFFFFFFFFFFFFFFF  # reference meaning "the all-zero page"
# the real digests of the zero page, by each algorithm a pack may use, and the
# all-zero digest the engine reports for zero pages without hashing them
ZERO_DIGESTS = (hashlib.sha256(bytes(PAGE)).digest(), blake3_page_list(bytes(PAGE))[0].tobytes(), bytes(HASH_SIZE))
SLOT_SHIFT = 32


def pack_names(packdir: str) -> list[str]:
    """Committed packs in a store's packs/ directory, oldest name first."""
    try:
        names = os.listdir(packdir)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.endswith(".h5") and not n.startswith("."))


MISSING = np.uint64(lib.SNP_HT_MISSING)  # "not in the table" (never a page reference)
_ZERO_KEYS = np.frombuffer(b"".join(ZERO_DIGESTS), np.uint8).reshape(-1, HASH_SIZE)


class DigestTable:
    """Page digest (32 bytes) -> uint64, looked up a whole batch per call
    (engine/csrc/hashtab.c; a dict costs ~1 us a page with the GIL held).
    Not thread-safe: PageIndex holds its lock around calls."""

    def __init__(self):
        t = lib.snp_ht_new()
        if t == ffi.NULL:
            raise MemoryError("page digest table")
        self._t = ffi.gc(t, lib.snp_ht_free)

    def __len__(self) -> int:
        return int(lib.snp_ht_len(self._t))

    @staticmethod
    def _keys(hashes: np.ndarray):
        h = np.ascontiguousarray(hashes, dtype=np.uint8).reshape(-1, HASH_SIZE)
        return h, ffi.from_buffer("uint8_t[]", h)

    def get(self, hashes: np.ndarray) -> np.ndarray:
        """Values of the digests (n, 32); MISSING where absent."""
        h, keys = self._keys(hashes)
        out = np.empty(len(h), dtype=np.uint64)
        if len(h):
            lib.snp_ht_get(self._t, keys, len(h), ffi.from_buffer("uint64_t[]", out))
        return out

    def put(self, hashes: np.ndarray, vals) -> None:
        h, keys = self._keys(hashes)
        v = np.ascontiguousarray(vals, dtype=np.uint64)
        if len(h) and lib.snp_ht_put(self._t, keys, ffi.from_buffer("uint64_t[]", v), len(h)) < 0:
            raise MemoryError("page digest table")

    def assign(self, hashes: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:
        """Values of the digests; absent ones are added with the values
        first, first+1, ... in order (a digest twice in the batch gets one).
        Returns (values, indices of the digests added)."""
        h, keys = self._keys(hashes)
        out = np.empty(len(h), dtype=np.uint64)
        fresh = np.empty(len(h), dtype=np.int64)
        if not len(h):
            return out, fresh
        k = lib.snp_ht_assign(self._t, keys, len(h), first, ffi.from_buffer("uint64_t[]", out),
                              ffi.cast("long *", ffi.from_buffer("int64_t[]", fresh)))
        if k < 0:
            raise MemoryError("page digest table")
        return out, fresh[:k]

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self)
        keys = np.empty((n, HASH_SIZE), dtype=np.uint8)
        vals = np.empty(n, dtype=np.uint64)
        if n:
            lib.snp_ht_items(self._t, ffi.from_buffer("uint8_t[]", keys), ffi.from_buffer("uint64_t[]", vals))
        return keys, vals


class PageIndex:
    """Shared by the writers of one Store object (the daemon runs several);
    a writer looks pages up here but keeps its own new pages apart until its
    packs are committed (SnapshotWriter.own), then merges them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.slots: list[str] = []           # pack file names, by slot
        self.slot_of: dict[str, int] = {}
        self.where = DigestTable()
        self.where.put(_ZERO_KEYS, [ZERO_REF] * len(_ZERO_KEYS))
        self._tables: dict[str, dict] = {}  # snapshot id -> {pid: (addrs, refs)}, oldest first

    def slot(self, pack_name: str) -> int:
        with self.lock:
            s = self.slot_of.get(pack_name)
            if s is None:
                s = self.slot_of[pack_name] = len(self.slots)
                self.slots.append(pack_name)
            return s

    def add(self, pack_name: str, first: int, hashes: np.ndarray) -> None:
        """Pages first.. of committed pack pack_name have these hashes (n, 32).
        Packs are added oldest first and the newest copy of a page wins, so
        that after a compaction new snapshots use the compacted packs and
        the old ones can be collected."""
        base = (self.slot(pack_name) << SLOT_SHIFT) + first
        with self.lock:
            self.where.put(hashes, np.arange(base, base + len(hashes), dtype=np.uint64))
            self.where.put(_ZERO_KEYS, [ZERO_REF] * len(_ZERO_KEYS))

    def get(self, hashes: np.ndarray) -> np.ndarray:
        """References of page digests (n, 32); MISSING where unknown."""
        with self.lock:
            return self.where.get(hashes)

    TABLE_BUDGET = 4 << 20  # page-table runs kept in memory (96 MiB at most), newest snapshots first

    def remember_tables(self, sid: str, tables: dict) -> None:
        """The page tables (runs: addrs, lengths, references in this index's slots) of a
        snapshot just committed through this index: the next incremental of
        the same tree starts from them instead of reading them back."""
        with self.lock:
            self._tables.pop(sid, None)
            self._tables[sid] = tables
            rows = sum(len(r[0]) for t in self._tables.values() for r in t.values())
            while len(self._tables) > 1 and rows > self.TABLE_BUDGET:
                old = next(iter(self._tables))
                rows -= sum(len(r[0]) for r in self._tables.pop(old).values())

    def tables_of(self, sid: str) -> dict | None:
        with self.lock:
            return self._tables.get(sid)

    def merge(self, own: DigestTable) -> None:
        """Pages of a writer's packs, once those are committed."""
        keys, vals = own.items()
        with self.lock:
            self.where.put(keys, vals)
