"""Compaction of a job's newest round, for the daemon's scheduled upkeep.

Why: every snapshot of a tree after the first is incremental; its page
table points at pages wherever the store first wrote them. Unchanged pages
keep the first full snapshot's packs alive for ever, and each pack holds
pages later rounds rewrote: with retention alone the packs a job needs only
grow in number and in dead bytes. Compacting the newest complete round
(storage/maintenance.compact: a full copy of each member, in fresh packs)
and making the copies the parents of the next rounds lets retention drop
every older round, and gc then frees all the packs written before.

The rule (docs/FORMAT.md §15.6), checked on the newest complete round of
each job that has a retention (--keep), at every compaction pass:
  - some member's chain is `depth` or more incremental snapshots long
    (its chain_depth attribute), or
  - some member's pages lie in `packs` or more page packs.
A job without --keep keeps every round: compacting it would only add data.
"""
from __future__ import annotations

import os

from ..pagehash import PAGE
from .round import FREE_MARGIN, NoSpaceError
from ..storage import maintenance
from ..storage import rounds as roundstore

COMPACT_DEPTH = 32
COMPACT_PACKS = 64


def compaction_reason(store, rec, depth: int = COMPACT_DEPTH, packs: int = COMPACT_PACKS) -> str:
    """Why round rec should be compacted ("" if it need not)."""
    for m in rec.members:
        with store.open(m["snapshot"]) as r:
            d = int(r.attrs.get("chain_depth", 0))
            n = len(r.pack_names)
        if d >= depth:
            return f"snapshot {m['snapshot']} is {d} incremental snapshots deep (limit {depth})"
        if n >= packs:
            return f"snapshot {m['snapshot']} uses {n} page packs (limit {packs})"
    return ""


def check_free_space(store, rec) -> None:
    """A compacted copy is at most the packs its source uses (or its pages,
    uncompressed, if less): refuse before HDF5 writes anything (round.py
    explains why HDF5 must not meet ENOSPC)."""
    margin = int(os.environ.get("SNAPSHOTD_FREE_MARGIN", FREE_MARGIN))
    if margin <= 0:
        return
    need = margin
    for m in rec.members:
        with store.open(m["snapshot"]) as r:
            packs = sum(os.path.getsize(os.path.join(store.packdir, n)) for n in r.pack_names
                        if os.path.exists(os.path.join(store.packdir, n)))
            need += min(packs, len(r.all_refs()) * PAGE)
    st = os.statvfs(store.snapdir)
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise NoSpaceError(28, f"No space left on device: store {store.path} has {free >> 10} KiB free, "
                               f"compacting round {rec.id} needs about {need >> 10} KiB")


def compact_round(store, job: str, rec) -> dict[str, str]:
    """Compact every member of rec; swap them for their copies in the round
    record; remove the originals. Returns old id -> copy id.

    Crash safety: until the record is replaced the copies are members of no
    round (prune treats a compacted copy like its source's round); after,
    the originals are orphans that prune removes (FORMAT.md §15.5)."""
    check_free_space(store, rec)
    swap: dict[str, str] = {}
    try:
        for m in rec.members:
            swap[m["snapshot"]] = maintenance.compact(store, m["snapshot"])["id"]
    except BaseException:
        for sid in swap.values():  # named by no record: not kept
            store.remove(sid)
        raise
    roundstore.replace_members(store, job, rec, swap)
    for old in swap:
        store.remove(old)
    store.list()  # refresh the catalog
    return swap
