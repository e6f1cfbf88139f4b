"""Copy-on-write sharing across a restored tree.

After fork, a parent and its children share their private anonymous pages
until one of them writes.  A restore that writes every process's pages
into it separately ends with a private copy in each (bench_tree: Pss of 8
processes sharing 512 MiB this way went from 1025 to 2561 MiB).  Only fork
shares pages copy-on-write, so: before a parent's stub forks its children
(tree_restore.create), its private anonymous mappings are mapped into the
stub and filled ("premapped"); the children inherit them, and later write
only the pages whose content differs (same storage reference = same
content) and drop the pages they do not have (MADV_DONTNEED: zero again).
A child that forks children of its own premaps in turn, starting from what
it inherited.

Eligible: private anonymous mappings ("" or [heap]) without flags that
fork or mmap would change (growsdown stacks, MAP_NORESERVE, DONTFORK,
WIPEONFORK, locked).  Everything else is restored as before.  CowPlan
tracks, per process, which regions its stub holds and the references of
the pages in them; Restorer keeps the regions that match its own mappings
(clear_stub, map_memory) and skips the pages already right.
"""
from __future__ import annotations

import os

import numpy as np

from ..kernel import engine
from ..kernel import syscalls as sc
from .._engine import ffi, lib
from ..pagehash import page_runs
from ..storage.snapshot import ZERO_REF

_SKIP_FLAGS = {"gd", "nr", "dc", "wf", "lo", "io", "pf"}


def eligible(m) -> bool:
    return (m.pages == "anon" and not m.shared and m.file is None and not m.shmem and m.sysv is None
            and m.path in ("", "[heap]") and not (_SKIP_FLAGS & set(m.vmflags)))


def _runs(addrs: np.ndarray):
    """(start, length) of runs of consecutive pages in sorted addrs."""
    first, count = page_runs(addrs)
    return [(int(addrs[f]), int(c) * sc.PAGE) for f, c in zip(first, count)]


def _covered(lo: int, hi: int, regions) -> bool:
    """[lo, hi) lies within the union of regions."""
    for s, e in sorted(regions):
        if s <= lo < e:
            lo = e
    return lo >= hi


def _diff(a, r, ia, ir):
    """Pages of (a, r) to write over what (ia, ir) holds, and pages of ia to
    zero (absent from a)."""
    if not len(ia):
        return np.ones(len(a), bool), ia
    pos = np.minimum(np.searchsorted(ia, a), len(ia) - 1)
    same = (ia[pos] == a) & (ir[pos] == r)
    pos2 = np.minimum(np.searchsorted(a, ia), max(len(a) - 1, 0))
    gone = ia if not len(a) else ia[a[pos2] != ia]
    return ~same, gone


class CowPlan:
    def __init__(self, reader):
        self.reader = reader
        self.content: dict[int, dict] = {}  # pid -> {(start, end): (addrs, refs)} held by its stub
        self._tables: dict[int, tuple] = {}
        self.written = 0  # pages written by premap
        self.skipped = 0  # pages a Restorer did not write (already right)

    def table(self, pid: int):
        if pid not in self._tables:
            self._tables[pid] = self.reader.page_table(pid)
        return self._tables[pid]

    def inherit(self, parent: int, child: int) -> None:
        self.content[child] = dict(self.content.get(parent, {}))

    def _write(self, pid: int, addrs: np.ndarray, refs: np.ndarray) -> None:
        memfd = os.open(f"/proc/{pid}/mem", os.O_RDWR)
        try:
            for i in range(0, len(addrs), 16384):
                a = np.ascontiguousarray(addrs[i:i + 16384])
                srcs, _keep = self.reader.page_sources(refs[i:i + 16384])  # _keep: the blocks srcs point into
                engine.check(lib.snp_write_pages_from(pid, memfd, ffi.from_buffer("uint64_t[]", a),
                                                      ffi.from_buffer("uint64_t[]", np.ascontiguousarray(srcs)),
                                                      len(a)), "write pages")
        finally:
            os.close(memfd)
        self.written += len(addrs)

    def _zero(self, t: engine.Tracee, addrs: np.ndarray) -> None:
        for start, size in _runs(addrs):
            t.call("madvise(MADV_DONTNEED)", sc.MADVISE, start, size, sc.MADV_DONTNEED)

    def premap(self, t: engine.Tracee, outer: int, p) -> None:
        """Map and fill p's eligible mappings in its bare stub (t, PID
        outer as we see it), before it forks."""
        from ..kernel import procfs
        cur = self.content.get(p.pid, {})
        # the stub's own VMAs (code, stack): not those it inherited from our
        # premaps, which the kernel may have merged into one VMA
        own = [(m.start, m.end) for m in procfs.maps(outer, with_flags=False) if not _covered(m.start, m.end, cur)]
        addrs, refs = self.table(p.pid)
        new = {}
        for m in p.mappings:
            if not eligible(m) or any(m.start < e and s < m.end for s, e in own):
                continue
            lo, hi = np.searchsorted(addrs, [m.start, m.end])
            a, r = addrs[lo:hi], refs[lo:hi]
            key = (m.start, m.end)
            if key in cur:
                write, gone = _diff(a, r, *cur[key])
                self._zero(t, gone)
            else:
                t.call(f"premap {m.start:#x}-{m.end:#x}", sc.MMAP, m.start, m.end - m.start,
                       sc.PROT_READ | sc.PROT_WRITE, sc.MAP_PRIVATE | sc.MAP_ANONYMOUS | sc.MAP_FIXED, -1, 0)
                write = r != ZERO_REF  # fresh memory reads as zeros already
            self._write(outer, a[write], r[write])
            new[key] = (a, r)
        self.content[p.pid] = new

    # -- used by Restorer --
    def kept(self, p) -> dict:
        """p's eligible mappings its stub holds already: (start, end) -> (addrs, refs)."""
        cur = self.content.get(p.pid, {})
        return {(m.start, m.end): cur[(m.start, m.end)] for m in p.mappings
                if eligible(m) and (m.start, m.end) in cur}

    def prepare(self, t: engine.Tracee, p, kept: dict) -> np.ndarray:
        """Zero the pages of kept regions that p does not have; return the
        sorted addresses of pages already right (not to be written)."""
        addrs, refs = self.table(p.pid)
        skip = []
        for (s, e), (ia, ir) in kept.items():
            lo, hi = np.searchsorted(addrs, [s, e])
            write, gone = _diff(addrs[lo:hi], refs[lo:hi], ia, ir)
            self._zero(t, gone)
            skip.append(addrs[lo:hi][~write])
        out = np.sort(np.concatenate(skip)) if skip else np.empty(0, np.uint64)
        self.skipped += len(out)
        return out


def keep_mask(addrs: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """True for the addresses (sorted) not in skip (sorted)."""
    if not len(skip):
        return np.ones(len(addrs), bool)
    pos = np.minimum(np.searchsorted(skip, addrs), len(skip) - 1)
    return skip[pos] != addrs
