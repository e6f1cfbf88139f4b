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


class PageIndex:
    """Shared by the writers of one Store object (the daemon runs several);
    a writer looks pages up here but keeps its own new pages apart until its
    packs are committed (SnapshotWriter.own), then merges them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.slots: list[str] = []           # pack file names, by slot
        self.slot_of: dict[str, int] = {}
        self.where: dict[bytes, int] = dict.fromkeys(ZERO_DIGESTS, ZERO_REF)

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
        keys = hashes.view(f"V{HASH_SIZE}").ravel().tolist()
        with self.lock:
            self.where.update(zip(keys, range(base, base + len(keys))))
            self.where.update(dict.fromkeys(ZERO_DIGESTS, ZERO_REF))

    def merge(self, own: dict[bytes, int]) -> None:
        """Pages of a writer's packs, once those are committed."""
        with self.lock:
            self.where.update(own)
