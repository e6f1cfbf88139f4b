"""Retention (prune), compaction and verification of a store.

Every step deletes or creates whole files, each durably, in an order that
keeps what is kept complete: prune removes snapshot files (never a pack);
gc then removes packs no remaining snapshot uses; compact writes a new full
snapshot with its own packs before anything old may go."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from ..faults import crashpoint
from ..pagehash import PAGE
from .pack import DamagedError, FormatError
from . import rounds as roundstore
from .pageindex import PageIndex
from .snapshot import SnapshotReader, SnapshotWriter
from .store import Store, StoreError, _Lock, newest_key


@dataclass
class Policy:
    last: int = 0     # the newest N of each tree
    hourly: int = 0   # the newest of each of the last N hours that have one
    daily: int = 0    # the newest of each of the last N days that have one
    weekly: int = 0

    def empty(self) -> bool:
        return not (self.last or self.hourly or self.daily or self.weekly)


_PERIODS = (("hourly", "%Y-%m-%d %H"), ("daily", "%Y-%m-%d"), ("weekly", "%G-%V"))


def select_kept(rows: list[dict], policy: Policy) -> dict[str, str]:
    """Which snapshots of one tree the policy keeps: id -> reason.  Rows are
    snapshot attributes; 'created' orders them (newest first)."""
    rows = sorted(rows, key=newest_key, reverse=True)
    keep: dict[str, str] = {}
    for r in rows[: policy.last]:
        keep[r["id"]] = "last"
    for name, fmt in _PERIODS:
        n = getattr(policy, name)
        seen: list[str] = []
        for r in rows:
            if len(seen) >= n:
                break
            period = time.strftime(fmt, time.gmtime(r.get("created", 0)))
            if period not in seen:
                seen.append(period)
                keep.setdefault(r["id"], name)
    return keep


def plan_round_prune(store: Store, job: str, policy: Policy, rows: list[dict] | None = None) -> dict:
    """What the policy keeps of a job whose snapshots are taken in rounds
    (docs/FORMAT.md §15.5): whole rounds, never some trees of one.

    The policy picks among the *complete* rounds (by their record's time);
    every member of a picked round is kept. An incomplete round is removed
    when it is older than the newest picked one (it can never be rolled back
    to), kept otherwise. A snapshot that names a round of this job but is a
    member of no record (an orphan: a crash between committing the members
    and the record) is removed when it is older than the newest picked round;
    a newer one may belong to a round being committed right now."""
    recs = roundstore.rounds(store, job)
    rows = [r for r in (store.list() if rows is None else rows) if r.get("job") == job and r.get("round")]
    picked = select_kept([{"id": r.id, "created": r.created} for r in recs if r.complete], policy)
    newest = max((r.created for r in recs if r.id in picked), default=None)
    kept_rounds, removed_rounds = [], []
    for rec in recs:
        if rec.id in picked or (not rec.complete and (newest is None or rec.created > newest)):
            kept_rounds.append((rec, picked.get(rec.id, "incomplete, newer than every kept round")))
        else:
            removed_rounds.append(rec)
    members = {m["snapshot"]: rec.id for rec in recs for m in rec.members}
    kept_ids = {rec.id for rec, _ in kept_rounds}
    by_id = {r["id"]: r for r in rows}
    kept, removed = [], []
    for rec, why in kept_rounds:
        kept += [{**by_id[m["snapshot"]], "reason": f"round {rec.id}: {why}"} for m in rec.members
                 if m["snapshot"] in by_id]
    for rec in removed_rounds:
        removed += [by_id[m["snapshot"]] for m in rec.members if m["snapshot"] in by_id]
    orphans = []
    for r in rows:
        if r["id"] in members:
            continue
        src_round = members.get(r.get("compacted_from", ""))
        if src_round is not None:  # a compacted copy of a member (`snapshotd compact`) goes with its round
            if src_round in kept_ids:
                kept.append({**r, "reason": f"round {src_round}: compacted copy of {r['compacted_from']}"})
            else:
                removed.append(r)
            continue
        if newest is not None and r.get("created", 0) < newest:
            orphans.append(r)
        else:
            kept.append({**r, "reason": "member of no round yet (a round being committed?)"})
    return {"kept": kept, "removed": removed + orphans, "orphans": orphans,
            "kept_rounds": [rec.id for rec, _ in kept_rounds], "removed_rounds": removed_rounds}


def _round_jobs(store: Store, rows: list[dict]) -> set[str]:
    """Jobs whose snapshots are kept by rounds: any with a round record or a
    snapshot naming a round."""
    return set(roundstore.jobs(store)) | {r["job"] for r in rows if r.get("job") and r.get("round")}


def plan_prune(store: Store, policy: Policy, job: str | None = None, tree: str | None = None) -> tuple[list, list]:
    """(kept rows, removed rows) for every tree (or the one asked for).
    Jobs taken in rounds are pruned by whole rounds (plan_round_prune)."""
    kept, removed, _ = _plan(store, policy, job, tree)
    return kept, removed


def _plan(store: Store, policy: Policy, job: str | None, tree: str | None) -> tuple[list, list, list]:
    if policy.empty():
        raise StoreError("prune needs a policy: --keep-last, --keep-hourly, --keep-daily or --keep-weekly")
    all_rows = store.list()
    round_jobs = _round_jobs(store, all_rows)
    groups: dict[tuple, list] = {}
    by_rounds: set[str] = set()
    for r in all_rows:
        if "error" in r:
            continue  # unreadable: never removed by policy (verify reports it)
        if job is not None and r.get("job") != job:
            continue
        if tree is not None and r.get("tree") != tree and str(r.get("root_pid")) != tree:
            continue
        if r.get("job") in round_jobs and r.get("round"):
            if tree is not None:
                raise StoreError(f"snapshots of tree {tree} belong to rounds of job {r['job']}: prune them with "
                                 f"--job {r['job']} (rounds are kept or removed whole)")
            by_rounds.add(r["job"])
            continue
        groups.setdefault((r.get("job", ""), r.get("tree", "")), []).append(r)
    if job is not None and tree is None and job in round_jobs:
        by_rounds.add(job)  # (a job may have records whose members are all gone)
    kept, removed, rounds_removed = [], [], []
    for j in sorted(by_rounds):
        plan = plan_round_prune(store, j, policy, all_rows)
        kept += plan["kept"]
        removed += plan["removed"]
        rounds_removed += [(j, rec) for rec in plan["removed_rounds"]]
    for rows in groups.values():
        k = select_kept(rows, policy)
        for r in rows:
            if r["id"] in k:
                kept.append({**r, "reason": k[r["id"]]})
            else:
                removed.append(r)
    return kept, removed, rounds_removed


def prune(store: Store, policy: Policy, job=None, tree=None, dry_run=False, gc=True) -> dict:
    kept, removed, rounds_removed = _plan(store, policy, job, tree)
    if not dry_run and (removed or rounds_removed):
        store.ensure_writable()
        # a removed round loses its record before any member: a record never
        # names a snapshot that prune deleted (FORMAT.md §15.5)
        for j, rec in rounds_removed:
            roundstore.delete(store, j, rec.id)
            crashpoint("prune-round-record-removed")
        for r in removed:
            store.remove(r["id"])
            crashpoint("prune-removed")
        store.list()  # refresh the catalog
    out = {"kept": [r["id"] for r in kept], "removed": [r["id"] for r in removed], "dry_run": dry_run,
           "removed_rounds": [f"{j}/{rec.id}" for j, rec in rounds_removed]}
    if gc and not dry_run:
        out["gc"] = store.gc()
    return out


def compact(store: Store, ref: str, progress=None) -> dict:
    """Write a new full snapshot of the same moment as `ref`, whose pages all
    live in new packs of its own (copied and verified on the way), so that
    the chain before it and the packs only it used can be pruned and
    collected.  The source snapshot is left as it is."""
    t0 = time.monotonic()
    src = store.open(ref)
    try:
        missing = src.missing_packs()
        if missing:
            raise DamagedError(f"{src.id}: page pack(s) missing: {', '.join(missing)}")
        store.ensure_writable()
        lock = _Lock(os.path.join(store.path, "lock"), exclusive=False)
        try:
            a = dict(src.attrs)
            root = int(a.get("root_pid", 0))
            sid = store.new_id(root)
            attrs = {k: a[k] for k in ("root_pid", "job", "round", "tree", "created", "tracker") if k in a}
            attrs.update(id=sid, parent="", kind="full", chain_depth=0, compacted_from=src.id,
                         compacted_at=time.time())
            # a fresh index: nothing is deduplicated against the old packs
            w = SnapshotWriter(store.snapshot_path(sid), store.packdir, attrs, PageIndex())
            try:
                for pid in src.pids():
                    addrs, refs = src.page_table(pid)
                    for i in range(0, len(addrs), 16384):
                        data = src.gather(refs[i:i + 16384])
                        w.add_pages(pid, addrs[i:i + 16384], data)
                        crashpoint("compact-write")
                        if progress:
                            progress.add(len(data) * PAGE)
                g = src.h5.get("files")
                for key in (g.keys() if g is not None else ()):
                    w.add_file(key, src.file_content(key))
                w.commit(src.image())
            except BaseException:
                w.abort()
                raise
        finally:
            lock.release()
    finally:
        src.close()
    store.forget_index()
    store.note_committed(store.snapshot_path(sid), w.final_attrs)
    return {"id": sid, "source": ref if ref == src.id else src.id, "stored_bytes": int(w.new_bytes),
            "pages": int(w.final_attrs["pages"]), "wall_s": round(time.monotonic() - t0, 3)}


def verify(store: Store, refs: list[str] | None = None, progress_factory=None) -> list[dict]:
    """Re-hash what each snapshot needs; one result per snapshot."""
    out = []
    targets = refs or store.ids()
    for ref in targets:
        try:
            r = store.open(ref)
        except (FormatError, DamagedError, OSError) as e:
            out.append({"id": ref, "ok": False, "problems": [str(e)]})
            continue
        with r:
            try:
                bar = progress_factory(f"verify {r.id}", _needed_bytes(r)) if progress_factory else None
            except DamagedError:
                bar = None
            try:
                problems = r.verify(bar)
            finally:
                if bar:
                    bar.close()
            if r.damaged_packs and os.access(store.path, os.W_OK):
                store.quarantine(sorted(r.damaged_packs), f"damaged, found by verify of {r.id}")
            out.append({"id": r.id, "ok": not problems, "problems": problems,
                        "damaged_packs": sorted(r.damaged_packs)})
    return out


def _needed_bytes(r: SnapshotReader) -> int:
    """Bytes of the blocks verify will read (progress bar total)."""
    refs = r.all_refs()
    refs = refs[refs != np.uint64(0xFFFFFFFFFFFFFFFF)]
    return len(np.unique(refs >> np.uint64(8))) * 256 * PAGE
