"""Dump: freeze a process tree, capture it into an Image plus its pages, let it run on.

Where each part lives (docs/INTERNALS.md has the whole picture):
  freeze.py   which processes may be dumped; Frozen (one process), freeze_tree
  tree.py     the tree: every descendant frozen, zombies, what processes share
  process.py  one process's metadata (ProcessDumper)
  refuse.py   state not restored yet, refused with one line (docs/COVERAGE.md)
  pages.py    its pages: plans, reads, the writer (PageDumper)
  cow.py      the held copy-on-write child; childcopy.py its own copy loop
  pageread.py batches of pages read into reused buffers
  capture.py  a tree's capture, and the sequence every snapshot follows
              (capture_trees: freeze -> capture -> release -> commit)

Order while frozen (every thread ptrace-stopped):
  1. map a scratch area in the target (kernel/inject.py) for the syscalls
     that only the process itself can answer (PR_GET_TID_ADDRESS, brk(0),
     rt_sigaction, sigaltstack, getitimer, prlimit64);
  2. read threads, process state, open files, mappings from /proc and ptrace;
  3. read the pages that must be read frozen, or fork the held copy-on-write
     child that keeps the others;
  4. unmap the scratch area and resume every thread with its registers intact.
The pages left are read after the release; the snapshot is committed (fsync
+ link) after that.
"""
from __future__ import annotations

import os
import signal
import socket
import time

from ..kernel import netns
from ..storage.store import Store
from .capture import CAPTURES, DEFAULT_CAPTURE, Part, TreeCapture, capture_trees
from .freeze import freeze_tree, validate_target
from .pageread import prewarm_lent_buffers
from .stats import DumpError, DumpStats

__all__ = ["dump", "DumpError", "DumpStats", "validate_target", "freeze_tree", "expected_written",
           "resolve_parent", "CAPTURES", "DEFAULT_CAPTURE"]


def expected_written(pid: int) -> int:
    """A guess of the pages a tracked process writes between two snapshots
    before any was taken: 1 % of its resident memory."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) // 100
    except (OSError, ValueError, IndexError):
        return 0


def resolve_parent(store: Store, pid: int, ref: str) -> str:
    """Snapshot id of the parent named by ref: an id or a prefix, or
    "latest", the newest snapshot of the tree rooted at pid on this host
    (the store's `tree` attribute, HOST:PID: a store shared by several nodes
    holds other hosts' PID pid too)."""
    if ref == "latest":
        sid = store.latest(tree=f"{socket.gethostname()}:{pid}")
        if not sid:
            raise DumpError(f"--parent latest: no snapshot of PID {pid} on this host in store {store.path}")
        return sid
    path = store.resolve(ref)
    sid = os.path.basename(path)[: -len(".h5")]
    return sid


def dump(pid: int, store: Store, kill: bool = False, progress=None, parent: str | None = None,
         attrs: dict | None = None, tracker=None, capture: str = DEFAULT_CAPTURE,
         vmflags: dict | None = None) -> tuple[str, DumpStats]:
    """Snapshot the process tree rooted at pid into store (every descendant,
    zombies included); returns (snapshot id, stats).

    parent: a snapshot of this tree (id, prefix or "latest"): an incremental
    in its chain, storing only content the store does not hold yet.
    attrs: extra snapshot attributes (job, round).
    tracker: an incremental.Tracker held by the caller across calls (the
    daemon); started at this snapshot if it is not already tracking since
    `parent`, else asked what was written (pages it vouches for are declared
    unchanged without being read).  Without one, pages are read and compared
    by content hash through the store's index.
    vmflags: procfs.vmflags_by_vma(pid), read shortly before (else it is
    read now: it walks every page table); checked again after the release.
    capture: "cow" (the freeze lasts a fork; pages are read from a held
    copy-on-write child while the process runs), "frozen" (read while
    frozen), or "auto" (the default: frozen when few pages must be read, i.e.
    a tracked incremental; else cow).
    A tree of several processes is captured frozen (no COW child); with a
    TreeTracker (one tracker per process) its tracked processes have only
    their written pages read."""
    t0 = time.monotonic()
    validate_target(pid)
    if capture not in CAPTURES:
        raise DumpError(f"unknown capture mode {capture!r} (one of: {', '.join(CAPTURES)})")
    store.ensure_writable()
    parent_sid = resolve_parent(store, pid, parent) if parent else None
    if parent_sid:
        with store.open(parent_sid) as preader:
            if not any(p["pid"] == pid for p in preader.image()["processes"]):
                raise DumpError(f"snapshot {parent_sid} has no process {pid}: it cannot be the parent of this dump")
    sid, writer = store.writer(pid, parent=parent_sid, **(attrs or {}))
    stats = DumpStats(tracker="hash" if parent_sid else "none", capture="frozen")
    # smaps is slow for big processes: read it before freezing
    part = Part(pid, sid, writer, TreeCapture(pid, writer, stats, tracker, parent_sid, capture, hint=vmflags or None))
    if tracker is not None:  # a tracked incremental copies its written pages while frozen
        prewarm_lent_buffers(expected_written(pid))
    lock = None

    def take_peer_lock(trees):
        nonlocal lock
        if kill:  # remote TCP peers: cut off before any socket is read (netns.py)
            lock = netns.PeerLock(trees[0].members)
            try:
                lock.take()
            except (netns.NetnsError, OSError) as e:
                raise DumpError(f"dump of PID {pid}: {e}") from None

    def note_peer_lock(p: Part):
        image = p.image
        if lock and image.netns:
            image.netns["locked"] = lock.record()
            if lock.peers:
                ns = image.netns
                where = "this host" if ns.get("host") else f"network namespace {ns.get('name') or ns['inode']}"
                ip = "ip" if ns.get("host") else (f"ip -n {ns['name']}" if ns.get("name") else "(in it) ip")
                stats.notes.append(f"until the restore, {where} sends nothing to {', '.join(lock.peers)} "
                                   "(the TCP peers of the tree must not see it go); without a restore, lift "
                                   f"it with: {ip} rule del pref {netns.LOCK_PREF}; "
                                   f"{ip} route flush table {netns.LOCK_TABLE}")

    try:
        stats.frozen_s = capture_trees([part], take_peer_lock, note_peer_lock)
    except BaseException:
        writer.abort()
        if lock:
            lock.release()
        raise
    procs = part.image.processes
    stats.stored_bytes = writer.stored_bytes
    stats.new_pages = writer.new_pages
    stats.wall_s = time.monotonic() - t0
    stats.pids = [p.pid for p in procs]
    if kill:
        for p in procs:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if lock:
            lock.close_silently([p.pid for p in procs])
    return sid, stats
