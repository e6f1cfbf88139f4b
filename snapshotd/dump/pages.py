"""Page capture of one process: which pages are read (PagePlan: in full,
or only those the dirty-page tracker saw written), how (while frozen, from the
held copy-on-write child, through the child's own copy loop), and how they
reach the snapshot writer (lent buffers, deferred until the release); plus
the check, after the release, that the mappings' flags used while frozen
still hold."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import numpy as np

from .._engine import lib
from ..image import Mapping
from ..incremental import ranges_and, ranges_minus
from ..incremental.uffd import PAGE_IS_PRESENT, PAGE_IS_SWAPPED, hole_regions, scan_regions
from ..kernel import engine
from ..kernel import syscalls as sc
from ..kernel.procfs import vmflags_by_vma
from ..pagehash import hash_pages, nonzero_mask, nonzero_rows
from ..progress import Progress
from . import childcopy
from .cow import needs_frozen_read
from .pageread import PAGES_PER_READ, PageReader, give_back_when_done, note_lent, take_lent_buffer
from .tree import SharedPagesOnce

# "auto" reads while frozen, into memory, when at most this many pages must be
# read (a tracked incremental: the written pages plus what uncertain regions
# hold); else it captures copy-on-write.  Reading 1024 scattered pages frozen
# costs ~1 ms; the fork costs ~20 ms per GiB of 4 KiB-mapped memory (RESULTS.md).
AUTO_FROZEN_MAX_PAGES = 32768


@dataclass
class PagePlan:
    """How one mapping's pages are captured (see ProcessDumper.plan_pages)."""

    mp: Mapping
    frozen: bool  # read while the process is frozen (a fork would not copy it)
    full: list = field(default_factory=list)  # (start, end) ranges read through pagemap
    written: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))  # read these pages
    kept: list = field(default_factory=list)  # (start, end) runs of private data pages: those not
    # written are unchanged since the parent


class PageDumper:
    """The pages of one process into the writer (ProcessDumper.pages)."""

    def __init__(self, pid: int, writer, stats, shared_pages: SharedPagesOnce | None = None,
                 incremental: bool = False):
        self.pid, self.writer, self.stats = pid, writer, stats
        self.incremental = incremental  # the writer has a parent snapshot of this process
        self.shared_pages = shared_pages or SharedPagesOnce()
        self.remote = None  # inject.Remote of the process, while its scratch area is mapped (the COW child's setup)
        self.defer = False  # pages read frozen are copied, and stored after the release
        self._deferring = False  # (within capture_pages)
        self.deferred: list = []  # pages read while frozen (copies), stored after the process runs again
        self.deferred_lent: list = []  # (addrs, data in a lent buffer, anon): written pages read while frozen
        self.lent: list = []  # buffers lent to the writer for pages copied while frozen
        self.lent_used = self.lent_pages = 0

    def plan_pages(self, mappings: list[Mapping], changes, capture: str) -> list[PagePlan]:
        """Decide, while frozen, how each mapping's pages are captured: which
        ranges are read in full (the store keeps only contents it does not
        hold yet: that is the hash comparison), which pages the tracker says were written (read) or not
        (declared unchanged).  PAGEMAP_SCAN is run on the frozen process, so
        the plan describes the moment of the freeze."""
        plans = []
        pmfd = -1
        try:
            for mp in mappings:
                if mp.pages not in ("anon", "cow"):
                    continue
                pl = PagePlan(mp, frozen=capture != "cow" or needs_frozen_read(mp.shared, mp.vmflags))
                whole = [(mp.start, mp.end)]
                tracked = [] if (changes is None or not self.incremental or mp.shared) else ranges_and(whole, changes.tracked)
                pl.full = ranges_minus(whole, tracked)
                if tracked:
                    if pmfd < 0:
                        pmfd = os.open(f"/proc/{self.pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
                    # while frozen only the kernel's answers are collected (runs of
                    # pages, cheap); page lists are made after the process runs again
                    w = changes.written
                    holes = [h for a, b in tracked for h in hole_regions(pmfd, a, b, mp.pages == "cow")]
                    pl.kept = ranges_minus(tracked, holes)
                    pl.written = np.concatenate([w[np.searchsorted(w, a) : np.searchsorted(w, b)] for a, b in tracked])
                plans.append(pl)
        finally:
            if pmfd >= 0:
                os.close(pmfd)
        return plans

    def pages_to_read(self, plans: list[PagePlan]) -> int:
        """Pages a frozen capture would read: written pages, plus the present
        pages of the ranges read in full (PAGEMAP_SCAN: cheap)."""
        n = sum(len(pl.written) for pl in plans)
        ps = PAGE_IS_PRESENT | PAGE_IS_SWAPPED
        pmfd = os.open(f"/proc/{self.pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        try:
            for pl in plans:
                for a, b in pl.full:
                    r = scan_regions(pmfd, a, b, 0, 0, 0, ps)
                    n += int(((r[:, 1] - r[:, 0]) // engine.PAGE).sum()) if len(r) else 0
                    if n > AUTO_FROZEN_MAX_PAGES:
                        return n
        finally:
            os.close(pmfd)
        return n

    def flush_deferred(self) -> None:
        """Store the pages copied while frozen (those in lent buffers are
        hashed only now: zero pages of anonymous memory are dropped then)."""
        for args, kw in self.deferred:
            self.writer.add_pages(self.pid, *args, **kw, borrow=True)
        for addrs, data, anon in self.deferred_lent:
            hashes = hash_pages(data)
            rows = nonzero_rows(hashes) if anon else None
            self.stats.pages += len(addrs) if rows is None else len(rows)
            self.writer.add_pages(self.pid, addrs, data, hashes, rows=rows, borrow=True)
        give_back_when_done(self.writer.take_borrowed(), self.lent)
        note_lent(self.lent_pages)
        self.deferred, self.deferred_lent, self.lent, self.lent_pages = [], [], [], 0

    def capture_pages(self, plans: list[PagePlan], source: int, frozen: bool) -> None:
        """Read the pages of the plans whose `frozen` flag matches, from
        process `source` (the dumped process itself, or its copy-on-write
        child), into the writer, through reused buffers (fresh memory is slow
        to fault in on this kind of VM).  Full ranges are found with
        /proc/PID/pagemap; the engine hashes while reading, zero pages come
        back with an all-zero hash and are dropped (except in file-backed
        private mappings, where a missing page would read back from the file).
        The copy-on-write child copies its readable pages itself (childcopy.py)
        unless it refuses.  Pages read frozen are only copied now, and
        stored after the release, when self.defer says so."""
        plans = [p for p in plans if p.frozen == frozen]
        if not plans:
            return
        self._deferring = frozen and self.defer
        # progress by address range scanned (sparse areas pass quickly)
        bar = Progress(f"dump {self.pid}", sum(b - a for p in plans for a, b in p.full))
        copier = self._child_copier(source) if source != self.pid and any(p.full for p in plans) else None
        try:
            with PageReader(source, self.pid) as reader:
                for pl in plans:
                    self._capture_plan(pl, reader, source, bar, copier)
        finally:
            self._deferring = False
            bar.close()
            if copier is not None:
                copier.close()
                if copier.broken:
                    self.stats.notes.append(f"PID {self.pid}: {copier.broken}; read through /proc/{source}/mem")

    def _child_copier(self, child: int) -> childcopy.ChildCopier | None:
        if not childcopy.enabled():
            return None
        try:
            return childcopy.ChildCopier(self.remote.for_child(child), self.pid)
        except (engine.EngineError, OSError) as e:
            self.stats.notes.append(f"the copy-on-write child of PID {self.pid} could not copy its pages itself "
                                    f"({e}): read through /proc/{child}/mem")
            return None

    def _read_flags(self, mp: Mapping, source: int) -> int:
        """snp_collect_pages flags for mapping mp read from process source."""
        flags = 0
        if mp.pages == "cow":
            flags |= lib.SNP_PAGES_ANON_ONLY
        if not mp.prot & sc.PROT_READ or source != self.pid:
            # process_vm_readv pins pages (FOLL_PIN), and pinning an anonymous
            # page shared with the COW child makes the kernel copy it first
            # ("unshare"): 3x slower, and memory doubles.  /proc/PID/mem
            # takes plain references and copies nothing.
            flags |= lib.SNP_PAGES_USE_MEMFILE
        return flags

    def _add_batch(self, bt, mp: Mapping):
        """Hand a batch of read pages to the writer; returns (rows kept,
        their references, or None when deferred).  Zero pages come back
        with an all-zero hash and are dropped, except in file-backed private
        mappings ("cow"), where a missing page would read back from the file."""
        rows = nonzero_rows(bt.hashes) if mp.pages == "anon" else None
        self.stats.pages += bt.got if rows is None else len(rows)
        if self._deferring:
            self._add_pages((bt.addrs, bt.data, bt.hashes), {"rows": rows})
            return rows, None
        # lent, not copied: the reader reuses the buffer once the
        # compressions that read it are done
        refs = self.writer.add_pages(self.pid, bt.addrs, bt.data, bt.hashes, rows=rows, borrow=True)
        bt.hold(self.writer.take_borrowed())
        return rows, refs

    def _capture_plan(self, pl: "PagePlan", reader: PageReader, source: int, bar: Progress,
                      copier: childcopy.ChildCopier | None = None) -> None:
        defer = self._deferring
        mp = pl.mp
        flags = self._read_flags(mp, source)
        # not through the child: what it cannot read (PROT_NONE), and device
        # memory (VM_IO/VM_PFNMAP), where a load is not a plain read
        if copier is not None and mp.prot & sc.PROT_READ and not {"io", "pf"} & set(mp.vmflags):
            batches = copier.batches(reader, pl.full, flags)
        else:
            batches = reader.batches(pl.full, flags)
        with contextlib.closing(batches):  # on an error too: its buffers are idle before they are reused
            for bt in batches:
                if bt.got:
                    self._add_batch(bt, mp)
                bar.add(bt.next - bt.start)
        buf = reader.bufs[0]  # free again
        n = reader.n
        for i in range(0, len(pl.written), n):
            w = pl.written[i : i + n]
            k = len(w)
            buf.addrs[:k] = w
            # frozen and deferred: read straight into buffers lent to the
            # writer, zero pages sorted out with the hashes once it runs again
            dst = self._lent_pages(k, n) if defer else buf.data
            reader.read_list(buf.c[0], dst, k, flags)
            self.stats.dirty_pages += k
            if defer:
                self.deferred_lent.append((w.copy(), dst[: k * engine.PAGE], mp.pages == "anon"))
                continue
            data = buf.data[: k * engine.PAGE]
            rows = None  # "cow": absent would mean "as in the file", so zero pages are kept
            if mp.pages == "anon":
                rows = np.flatnonzero(nonzero_mask(data))
            self._add_pages((buf.addrs[:k], data), {"rows": rows})
            self.stats.pages += k if rows is None else len(rows)

    def _lent_pages(self, k: int, n: int) -> np.ndarray:
        """Room for k (<= n) pages in the buffers lent to the writer: the
        written pages of all mappings fill them one after the other."""
        if not self.lent or self.lent_used + k > n:
            self.lent.append(take_lent_buffer(n))
            self.lent_used = 0
        a = self.lent_used * engine.PAGE
        self.lent_used += k
        self.lent_pages += k
        return self.lent[-1][a : a + k * engine.PAGE]

    def _add_pages(self, args: tuple, kw: dict) -> None:
        if self._deferring:  # copies: the buffers are reused
            self.deferred.append((tuple(np.array(a) for a in args), kw))
        else:
            self.writer.add_pages(self.pid, *args, **kw)

    def add_unchanged(self, plans: list[PagePlan]) -> None:
        """Declare the pages the tracker found unchanged since the parent:
        those of the kept runs that were not written."""
        kept = [r for p in plans for r in p.kept]
        if not kept:
            return
        written = [p.written for p in plans if len(p.written)]
        written = np.concatenate(written) if written else np.empty(0, np.uint64)
        self.stats.unchanged_pages += self.writer.add_unchanged_runs(
            self.pid, np.asarray(kept, dtype=np.uint64).reshape(-1, 2), written)

    def dump_pages(self, mappings: list[Mapping]) -> None:
        """Stream the pages to keep into the writer (the tree path: pages
        that processes of the tree share copy-on-write are read once, through
        shared_pages).  Zero pages come back with an all-zero hash and are
        dropped, except in file-backed private mappings where a missing page
        would read back from the file."""
        n = PAGES_PER_READ
        # progress by address range scanned (sparse areas pass quickly)
        bar = Progress(f"dump {self.pid}", sum(m.end - m.start for m in mappings if m.pages in ("anon", "cow")))
        try:
            with PageReader(self.pid, self.pid) as reader:
                for mp in mappings:
                    if mp.pages not in ("anon", "cow"):
                        continue
                    flags = self._read_flags(mp, self.pid)
                    private = mp.pages == "anon" and not mp.shared
                    # windows of the mapping, so that pagemap reads stay small
                    windows = [(w, min(w + n * engine.PAGE, mp.end)) for w in range(mp.start, mp.end, n * engine.PAGE)] \
                        if private else [(mp.start, mp.end)]
                    for wlo, whi in windows:
                        if private:  # frames already captured from another process of the tree
                            kaddrs, krefs, todo, pfn = self.shared_pages.split_private(reader.pmfd, wlo, whi)
                            self.writer.add_refs(self.pid, kaddrs, krefs)
                            self.stats.pages += len(kaddrs)
                        else:
                            todo = self.shared_pages.ranges(reader.pmfd, mp)
                        bar.add((whi - wlo) - sum(hi - lo for lo, hi in todo))  # skipped: captured already
                        batches = reader.batches(todo, flags)
                        with contextlib.closing(batches):  # idle buffers before reader.close()
                            for bt in batches:
                                if bt.got:
                                    rows, refs = self._add_batch(bt, mp)
                                    if private:
                                        self.shared_pages.remember(pfn, wlo, bt.addrs, rows, refs)
                                bar.add(bt.next - bt.start)
        finally:
            bar.close()


UFFD_VMFLAGS = {"uw", "um", "ui"}  # userfaultfd registration (a tracker's, set during the dump)


def check_vmflags_unchanged(pid: int, used: dict, guessed: set = frozenset()) -> tuple[dict, str | None]:
    """After resume: every mapping whose VmFlags were taken from before the
    freeze (or guessed) must show the same flags now (if it still exists
    unchanged), so the flags held during the freeze too.  Returns the flags
    read now and, if one differs, the error that fails the dump."""
    now = vmflags_by_vma(pid)
    for k, f in used.items():
        want = set(f) - UFFD_VMFLAGS
        g = now.get(k)
        if g is None and k in guessed:
            # it changed bounds since (merged, grown, cut): what covers its range now must agree
            cover = sorted((kk for kk in now if kk[0] < k[1] and kk[1] > k[0]), key=lambda kk: kk[0])
            pos = k[0]
            for kk in cover:
                if kk[0] > pos or set(now[kk]) - UFFD_VMFLAGS != want:
                    break
                pos = kk[1]
            if pos >= k[1]:
                continue
            return now, (f"PID {pid}: mapping {k[0]:#x}-{k[1]:#x} is new and its flags could not be verified "
                         "during the dump; nothing was saved, try again")
        if g is not None and set(g) - UFFD_VMFLAGS != want:
            why = "is new and its flags were guessed wrong" if k in guessed else "changed its flags (madvise)"
            return now, (f"PID {pid}: mapping {k[0]:#x}-{k[1]:#x} {why} during the dump; nothing was saved, "
                         "try again")
    return now, None
