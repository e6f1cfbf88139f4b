"""userfaultfd write-protect (async mode) + PAGEMAP_SCAN tracker (Linux 6.7+).

start(pid), with pid frozen:
  1. inject userfaultfd(O_CLOEXEC|O_NONBLOCK|UFFD_USER_MODE_ONLY) into pid;
  2. pidfd_open(pid) + pidfd_getfd(): our own descriptor for it; inject close()
     so the process never sees it (its fd table is as before);
  3. UFFDIO_API with WP_ASYNC | WP_UNPOPULATED (| WP_HUGETLBFS_SHMEM);
  4. UFFDIO_REGISTER (MODE_WP) + UFFDIO_WRITEPROTECT every writable private
     mapping ([vdso]/[vvar] refuse registration and are skipped).
Our descriptor acts on the target's mm: we keep it open between snapshots
(closing it ends tracking).  Writes are resolved by the kernel (no message).

collect_and_reset(), with pid frozen: for each mapping (one /proc/PID/maps
line = one VMA) that was registered: PAGEMAP_SCAN with PM_SCAN_WP_MATCHING |
PM_SCAN_CHECK_WPASYNC, category PAGE_IS_WRITTEN: the written pages, re-protected
in the same walk.  CHECK_WPASYNC fails with EPERM when the VMA lost its
registration (mremap moves it out, munmap+mmap replaces it, exec replaces the
whole mm): such regions, and mappings that are new, are reported uncertain
(dump hashes them) and registered from now on.  MADV_DONTNEED is not a write
(pages just vanish): dump reads the current pagemap, so vanished pages are
absent from the new snapshot whatever the tracker says, and zero-page
mappings after it are caught by PAGE_IS_PFNZERO.
"""
from __future__ import annotations

import errno
import os

import numpy as np

from ..kernel import engine, inject, libc, probes, procfs
from ..kernel import syscalls as sc
from .._engine import ffi, lib
from .base import Changes, Tracker, log

UFFD_USER_MODE_ONLY = 1
UFFD_FEATURE_WP_HUGETLBFS_SHMEM = 1 << 12
UFFD_FEATURE_WP_UNPOPULATED = 1 << 13
UFFD_FEATURE_WP_ASYNC = 1 << 15
PM_SCAN_WP_MATCHING, PM_SCAN_CHECK_WPASYNC = 1 << 0, 1 << 1
PAGE_IS_WPALLOWED, PAGE_IS_WRITTEN, PAGE_IS_FILE = 1 << 0, 1 << 1, 1 << 2
PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_IS_PFNZERO = 1 << 3, 1 << 4, 1 << 5
SCAN_BATCH = 1 << 16


def _copy_fd(pid: int, fd: int) -> int:
    """Our own copy of fd of process pid (pidfd_open + pidfd_getfd)."""
    pidfd = os.pidfd_open(pid)
    try:
        return libc.pidfd_getfd(pidfd, fd)
    except OSError as e:
        raise OSError(e.errno, f"pidfd_getfd({pid}, {fd}): {e.strerror}") from None
    finally:
        os.close(pidfd)


def scan_pages(pmfd: int, start: int, end: int, flags: int, inverted: int, mask: int, anyof: int) -> np.ndarray:
    """Addresses of the pages in [start, end) that PAGEMAP_SCAN matches."""
    buf = np.empty(SCAN_BATCH, dtype=np.uint64)
    cbuf = ffi.from_buffer("uint64_t[]", buf)
    nxt = ffi.new("uint64_t *")
    parts = []
    a = start
    while a < end:
        n = lib.snp_pm_scan_pages(pmfd, a, end, flags, inverted, mask, anyof, cbuf, SCAN_BATCH, nxt)
        engine.check(n, f"PAGEMAP_SCAN {a:#x}-{end:#x}")
        if n:
            parts.append(buf[:n].copy())
        a = nxt[0]
    return np.concatenate(parts) if parts else np.empty(0, np.uint64)


def scan_regions(pmfd: int, start: int, end: int, flags: int, inverted: int, mask: int, anyof: int) -> np.ndarray:
    """(n, 2) [start, end) runs of the pages in [start, end) that PAGEMAP_SCAN matches."""
    buf = np.empty((SCAN_BATCH, 2), dtype=np.uint64)
    cbuf = ffi.from_buffer("uint64_t[]", buf)
    nxt = ffi.new("uint64_t *")
    parts = []
    a = start
    while a < end:
        n = lib.snp_pm_scan_regions(pmfd, a, end, flags, inverted, mask, anyof, cbuf, SCAN_BATCH, nxt)
        engine.check(n, f"PAGEMAP_SCAN {a:#x}-{end:#x}")
        if n:
            parts.append(buf[:n].copy())
        a = nxt[0]
    return np.concatenate(parts) if parts else np.empty((0, 2), np.uint64)


def hole_regions(pmfd: int, start: int, end: int, file_backed: bool) -> list:
    """Sorted, merged runs of pages in [start, end) that hold no private data
    of their own: absent (neither present nor swapped), the zero page, and,
    in file-backed mappings, page-cache pages (PAGE_IS_FILE, which costs a
    page lookup each, so it is asked only there).  Three cheap walks instead
    of one that tests every page for "file"."""
    ps = PAGE_IS_PRESENT | PAGE_IS_SWAPPED
    parts = [scan_regions(pmfd, start, end, 0, ps, ps, 0), scan_regions(pmfd, start, end, 0, 0, PAGE_IS_PFNZERO, 0)]
    if file_backed:
        parts.append(scan_regions(pmfd, start, end, 0, 0, PAGE_IS_FILE, 0))
    allr = sorted(tuple(map(int, r)) for part in parts for r in part)
    out: list = []
    for s, e in allr:
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [tuple(r) for r in out]


def expand(regions: np.ndarray) -> np.ndarray:
    """Page addresses of (n, 2) runs, in order."""
    if not len(regions):
        return np.empty(0, np.uint64)
    lens = ((regions[:, 1] - regions[:, 0]) // sc.PAGE).astype(np.int64)
    starts = np.repeat(regions[:, 0] - np.cumsum(np.concatenate(([0], lens[:-1]))).astype(np.uint64) * np.uint64(sc.PAGE), lens)
    return starts + np.arange(int(lens.sum()), dtype=np.uint64) * np.uint64(sc.PAGE)


def _trackable(m: procfs.MapLine) -> bool:
    return m.perms[3] == "p" and m.path not in procfs.SPECIAL_MAPS


class UffdTracker(Tracker):
    name = "uffd-wp"

    def __init__(self):
        super().__init__()
        self.fd = -1
        self.registered: list[tuple[int, int]] = []  # VMAs registered at the last reset
        self.features = 0

    _available = None

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if cls._available is None:
            cls._available = cls._probe()
        return cls._available

    @staticmethod
    def _probe() -> tuple[bool, str]:
        for name, probe in (("userfaultfd WP_ASYNC", probes.probe_uffd_wp_async),
                            ("PAGEMAP_SCAN", probes.probe_pagemap_scan), ("pidfd_getfd", probes.probe_pidfd)):
            try:
                ok, detail = probe()[:2]
            except Exception as e:  # noqa: BLE001 - a crashing probe means unavailable
                ok, detail = False, str(e)
            if not ok:
                return False, f"{name}: {detail}"
        return True, "userfaultfd WP_ASYNC + PAGEMAP_SCAN (needs a long-lived holder: the daemon)"

    # -- descriptor --
    def _open_uffd(self) -> None:
        # self-restoring calls: the process is the job's (kernel/inject.py)
        try:
            fd_t = inject.oneshot(self.pid, sc.USERFAULTFD, sc.O_CLOEXEC | sc.O_NONBLOCK | UFFD_USER_MODE_ONLY,
                                  undo=lib.SNP_SAFE_CLOSE_RESULT)
        except inject.InjectError as e:
            raise engine.EngineError(errno.ENOTSUP, str(e)) from None
        if fd_t < 0:
            raise engine.EngineError(-fd_t, f"userfaultfd in PID {self.pid}: {os.strerror(-fd_t)}")
        try:
            self.fd = _copy_fd(self.pid, fd_t)
        finally:
            inject.oneshot(self.pid, sc.CLOSE, fd_t)
        got = ffi.new("uint64_t *")
        want = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED
        # WP_HUGETLBFS_SHMEM lets shmem/hugetlbfs mappings register for WP too;
        # UFFDIO_API can be called once per descriptor, so ask for all at once
        r = lib.snp_uffd_api(self.fd, want | UFFD_FEATURE_WP_HUGETLBFS_SHMEM, got)
        if r < 0:
            os.close(self.fd)
            self.fd = -1
            raise engine.EngineError(-r, f"UFFDIO_API: {os.strerror(-r)}")
        self.features = got[0]

    def _register(self, start: int, end: int) -> int:
        r = lib.snp_uffd_register_wp(self.fd, start, end - start)
        if r == 0:
            r = lib.snp_uffd_writeprotect(self.fd, start, end - start, 1)
        return r

    # -- interface --
    def start(self, pid: int) -> None:
        super().start(pid)
        self._open_uffd()
        self.registered = []
        for m in procfs.maps(pid, with_flags=False):
            if _trackable(m) and m.perms[1] == "w":
                r = self._register(m.start, m.end)
                if r == 0:
                    self.registered.append((m.start, m.end))
                else:
                    log.info("uffd-wp: cannot register %#x-%#x %s: %s (hashed instead)", m.start, m.end, m.path,
                             os.strerror(-r))

    def collect_and_reset(self) -> Changes:
        ch = Changes()
        maps = [m for m in procfs.maps(self.pid, with_flags=False) if _trackable(m)]
        pmfd = os.open(f"/proc/{self.pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)  # fresh: follows exec
        written, tracked, to_register = [], [], []
        try:
            reg = self.registered
            j = 0
            for m in maps:
                while j < len(reg) and reg[j][1] <= m.start:
                    j += 1
                overlaps = j < len(reg) and reg[j][0] < m.end
                if not overlaps:
                    if m.perms[1] == "w":
                        ch.note(f"uffd-wp: new mapping {m.start:#x}-{m.end:#x} {m.path or '(anon)'}: hashed, tracked from now")
                        to_register.append(m)
                    continue
                try:
                    # one VMA per scan: CHECK_WPASYNC fails before any page is touched
                    w = scan_pages(pmfd, m.start, m.end, PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC, 0,
                                   PAGE_IS_WRITTEN, 0)
                except engine.EngineError as e:
                    if e.errno != errno.EPERM:
                        raise
                    ch.note(f"uffd-wp: {m.start:#x}-{m.end:#x} {m.path or '(anon)'} lost its registration "
                            f"(mremap, munmap+mmap or exec): hashed, tracked from now")
                    if m.perms[1] == "w":
                        to_register.append(m)
                    continue
                tracked.append((m.start, m.end))
                if len(w):
                    written.append(w)
        finally:
            os.close(pmfd)
        new_reg = list(tracked)
        for m in to_register:
            r = self._register(m.start, m.end)
            if r < 0 and not tracked and not new_reg:
                # nothing tracked and nothing registers (ESRCH, or ENOMEM: no such
                # VMA in the mm our descriptor belongs to): the process exec'd and
                # our descriptor watches its old, dead mm.  Start over with a new one.
                ch.note(f"uffd-wp: PID {self.pid} has a new address space (exec): new userfaultfd, everything hashed")
                os.close(self.fd)
                self.fd = -1
                self.start(self.pid)
                return Changes(notes=ch.notes)
            if r == 0:
                new_reg.append((m.start, m.end))
            else:
                ch.note(f"uffd-wp: cannot register {m.start:#x}-{m.end:#x} {m.path}: {os.strerror(-r)} (hashed)")
        self.registered = sorted(new_reg)
        ch.tracked = tracked
        ch.written = np.sort(np.concatenate(written)) if written else np.empty(0, np.uint64)
        return ch

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.registered = []
        super().close()
