"""Dirty-page trackers: "which pages of this process changed since the last
snapshot?"

Every tracker has the same life cycle, driven by dump() while the process is
frozen (all its threads ptrace-stopped):

    t.start(pid)               at the snapshot that becomes the baseline
    ch = t.collect_and_reset() at the next snapshot: what was written since
                               the previous call (or start), and from now on
                               track again
    t.close()

`collect_and_reset` returns Changes: for the address ranges in `tracked` the
tracker vouches that every page NOT listed in `written` still holds what it
held at the previous call; everything outside `tracked` is uncertain (a new
mapping, one whose registration was lost, a shared mapping...) and dump
compares page hashes with the parent snapshot there.

Trackers (best first; `choose()` picks the first available):
  uffd-wp     userfaultfd write-protect, async mode, + PAGEMAP_SCAN (6.7+);
              needs a long-lived holder of the descriptor (the daemon)
  soft-dirty  /proc/PID/clear_refs + pagemap bit 55 (CONFIG_MEM_SOFT_DIRTY)
  hash        content-hash comparison with the parent (always available)
"""
from __future__ import annotations

from .base import Tracker, TrackerUnavailable


def tracker_classes():
    from .hashcmp import HashTracker
    from .softdirty import SoftDirtyTracker
    from .uffd import UffdTracker

    return [UffdTracker, SoftDirtyTracker, HashTracker]


def choose(name: str = "auto") -> Tracker:
    """A new tracker: by name ("uffd-wp", "soft-dirty", "hash") or the best available."""
    for cls in tracker_classes():
        if name not in ("auto", cls.name):
            continue
        ok, why = cls.available()
        if ok:
            return cls()
        if name != "auto":
            raise TrackerUnavailable(f"tracker {name} is not available here: {why}")
    if name != "auto":
        raise TrackerUnavailable(f"unknown tracker {name!r}")
    raise TrackerUnavailable("no tracker available")  # hash always is: not reached


def report() -> list[dict]:
    """Each tracker with whether it works here (for `snapshotd check`)."""
    out = []
    for cls in tracker_classes():
        ok, why = cls.available()
        out.append({"name": cls.name, "ok": ok, "detail": why})
    return out


class TreeTracker:
    """One tracker per process of a tree, held across dump() calls (the
    daemon's object): `tree.for_pid(pid)` gives (creating) that process's
    tracker; processes that are gone are closed by `prune(alive_pids)`."""

    def __init__(self, name: str = "auto"):
        self.name = name
        self.trackers: dict[int, Tracker] = {}

    def for_pid(self, pid: int) -> Tracker:
        t = self.trackers.get(pid)
        if t is None:
            t = self.trackers[pid] = choose(self.name)
        return t

    def prune(self, alive: set[int]) -> None:
        for pid in [p for p in self.trackers if p not in alive]:
            self.trackers.pop(pid).close()

    def close(self) -> None:
        for t in self.trackers.values():
            t.close()
        self.trackers.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def ranges_minus(a: list, b: list) -> list:
    """Parts of the sorted disjoint ranges a not covered by sorted disjoint b."""
    out = []
    j = 0
    for s, e in a:
        while j < len(b) and b[j][1] <= s:
            j += 1
        k = j
        cur = s
        while k < len(b) and b[k][0] < e:
            if b[k][0] > cur:
                out.append((cur, b[k][0]))
            cur = max(cur, b[k][1])
            k += 1
        if cur < e:
            out.append((cur, e))
    return out


def ranges_and(a: list, b: list) -> list:
    """Intersection of two sorted disjoint range lists."""
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        s, e = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if s < e:
            out.append((s, e))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out
