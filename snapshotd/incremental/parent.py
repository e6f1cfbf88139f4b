"""The parent snapshot's pages of one process, as an incremental dump needs
them: which address held which content (for hash comparison), and a way to
say "this page is as in the parent" to the writer."""
from __future__ import annotations

import numpy as np

from ..pagehash import HASH_SIZE

GATHER = 16384


class ParentPages:
    def __init__(self, reader, pid: int):
        self.reader = reader
        self.pid = pid
        self.addrs, self.refs = reader.page_table(pid)
        self._hashes = None

    def hashes(self) -> np.ndarray:
        """(n, 32) page hashes, aligned with self.addrs (zeros for zero pages)."""
        if self._hashes is None:
            get = getattr(self.reader, "page_hashes", None)
            if get is not None:
                self._hashes = get(self.pid)
            else:
                pool = self.reader._hashes
                out = np.zeros((len(self.refs), HASH_SIZE), dtype=np.uint8)
                nz = self.refs < len(pool)
                out[nz] = pool[self.refs[nz].astype(np.int64)]
                self._hashes = out
        return self._hashes

    def same(self, addrs: np.ndarray, hashes: np.ndarray) -> np.ndarray:
        """Boolean mask: page i (addrs[i], content hash hashes[i]) equals the
        parent's page at the same address."""
        if not len(self.addrs) or not len(addrs):
            return np.zeros(len(addrs), dtype=bool)
        idx = np.searchsorted(self.addrs, addrs)
        idx_c = np.minimum(idx, len(self.addrs) - 1)
        hit = self.addrs[idx_c] == addrs
        eq = np.zeros(len(addrs), dtype=bool)
        if hit.any():
            ph = self.hashes()[idx_c[hit]]
            eq[hit] = (ph == hashes[hit]).all(axis=1)
        return eq

    def present(self, addrs: np.ndarray) -> np.ndarray:
        """The addresses (sorted) among addrs that the parent stores."""
        if not len(self.addrs) or not len(addrs):
            return np.empty(0, np.uint64)
        idx = np.minimum(np.searchsorted(self.addrs, addrs), len(self.addrs) - 1)
        return addrs[self.addrs[idx] == addrs]

    def add_unchanged(self, writer, addrs: np.ndarray) -> int:
        """Declare addrs (sorted) unchanged since the parent; addresses the
        parent does not store are zero pages and are left out.  Uses the
        writer's add_unchanged when the storage layer has it; otherwise copies
        the parent's pages into this snapshot (its content-hash dedup stores
        each content once).  Returns the number of pages declared."""
        addrs = self.present(np.asarray(addrs, dtype=np.uint64))
        if not len(addrs):
            return 0
        if hasattr(writer, "add_unchanged"):
            writer.add_unchanged(self.pid, addrs)
            return len(addrs)
        idx = np.searchsorted(self.addrs, addrs)
        buf = np.empty((min(GATHER, len(addrs)), 4096), dtype=np.uint8)
        for i in range(0, len(addrs), GATHER):
            refs = self.refs[idx[i : i + GATHER]]
            data = self.reader.gather(refs, buf)
            writer.add_pages(self.pid, addrs[i : i + GATHER], data, self.hashes()[idx[i : i + GATHER]])
        return len(addrs)
