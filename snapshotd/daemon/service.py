"""The service: registrations, rounds on schedule, retention, and the verbs.

A *job* groups the trees that are snapshotted together (one round = all of its
live trees frozen together); a tree registered without --job gets a job of its
own, named pid-<PID>. Each job is one APScheduler job (id "job:<name>", an
interval trigger with jitter, max_instances=1, coalescing missed runs) in a
persistent SQLAlchemy job store on sqlite (STORE/daemon/schedule.sqlite). The
registrations live in that job's kwargs, so a restarted daemon has them back.

Per tree the daemon holds, between snapshots, the previous snapshot id and the
dirty-page tracker (issue 4: created at its first round, closed when it retires), and the outcome of
the last attempt for `status`.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import timezone

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from .. import incremental
from . import round as roundmod
from ..dump import validate_target
from ..storage import maintenance
from ..storage import rounds as roundstore
from . import auth
from . import upkeep
from . import rollback as rb
from .jobstore import DiskTolerantJobStore
from .protocol import ProtocolError, format_duration, parse_duration
from .triggers import SteadyIntervalTrigger

log = logging.getLogger("snapshotd")


def _drop_tracker(tree) -> None:
    """Close a tree's dirty-page tracker (its userfaultfd): the next round
    starts a new one."""
    if tree.tracker is not None:
        try:
            tree.tracker.close()
        except OSError:
            pass
        tree.tracker = None

_DAEMON: "Daemon | None" = None  # the running daemon, for the scheduled functions below


def scheduled_round(job: str, **_registration) -> None:
    """APScheduler entry point (stored by reference in the job store)."""
    if _DAEMON is not None:
        _DAEMON.scheduled_round(job)


def scheduled_retention() -> None:
    if _DAEMON is not None:
        _DAEMON.retention()


def scheduled_compaction() -> None:
    if _DAEMON is not None:
        _DAEMON.compaction()


class ServiceError(Exception):
    pass


def _msg(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror + (f": {e.filename}" if e.filename else "")
    return str(e) or type(e).__name__


def jitter_for(every: int) -> float:
    """Spread trees with one interval so they do not all freeze at once."""
    return min(every * 0.1, 30.0)


@dataclass
class Tree:
    pid: int
    start_time: int
    uid: int
    every: int
    name: str = ""
    keep: int | None = None
    registered: float = field(default_factory=time.time)
    state: str = "active"  # "active" or "retired"
    reason: str = ""  # why retired
    # runtime (not persisted)
    last_snapshot: str = ""
    last_round: str = ""
    last_time: float = 0.0
    last_bytes: int = 0
    last_duration: float = 0.0
    last_frozen: float = 0.0
    last_error: str = ""
    last_error_time: float = 0.0
    snapshots: int = 0
    failures: int = 0
    tracker: object = None  # dirty-page tracker held between snapshots (issue 4)

    PERSISTED = ("pid", "start_time", "uid", "every", "name", "keep", "registered", "state", "reason")

    def persisted(self) -> dict:
        return {k: getattr(self, k) for k in self.PERSISTED}

    def status(self) -> dict:
        d = asdict(self)
        d.pop("tracker")
        d["every"] = format_duration(self.every)
        return d


@dataclass
class Job:
    key: str  # the store's key: NAME for root's jobs, UID:NAME for another owner's (storage/rounds.py)
    uid: int  # the owner: the uid of its processes
    trees: dict = field(default_factory=dict)  # pid -> Tree
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def every(self) -> int:
        live = [t.every for t in self.trees.values() if t.state == "active"] or \
               [t.every for t in self.trees.values()] or [3600]
        return min(live)

    @property
    def name(self) -> str:
        """The job's name as its owner gives it."""
        return roundstore.split_key(self.key)[1]

    @property
    def active(self) -> list:
        return [t for t in self.trees.values() if t.state == "active"]

    @property
    def keep(self) -> int | None:
        """Newest complete rounds to keep: the largest --keep of its trees,
        None (keep all) if any tree has none."""
        ks = [t.keep for t in self.trees.values()]
        return None if not ks or any(k is None for k in ks) else max(ks)


class Daemon:
    def __init__(self, store, retention_every: int = 60, workers: int = 2, compact_every: int = 6 * 3600,
                 compact_depth: int = upkeep.COMPACT_DEPTH, compact_packs: int = upkeep.COMPACT_PACKS):
        self.store = store
        self.jobs: dict[str, Job] = {}
        self.mutex = threading.RLock()  # guards self.jobs and the trees in it
        # one writer at a time: writers share the store's page index, which names pages
        # of packs not committed yet (storage/snapshot.py), and gc must not run meanwhile
        self.write_lock = threading.Lock()
        self.started = time.time()
        self.retention_every = retention_every
        self.compact_every, self.compact_depth, self.compact_packs = compact_every, compact_depth, compact_packs
        # outcome of the last retention and compaction passes, for `status`
        self.upkeep = {name: {"every": format_duration(every), "last_run": 0.0, "last_duration": 0.0,
                              "last_error": "", "last_error_time": 0.0, "runs": 0, "failures": 0}
                       for name, every in (("retention", retention_every), ("compaction", compact_every))}
        self.upkeep["retention"].update(removed_snapshots=0, removed_packs=0, freed_bytes=0)
        self.upkeep["compaction"].update(compacted_rounds=0, last_compacted="", last_reason="")
        self._gc_pending = False
        self.restart_needed = ""  # why the daemon must re-exec itself (see _round)
        self.on_restart = lambda: None  # set by the server: stop, then re-exec
        auth.check_store_private(store.path)
        statedir = os.path.join(store.path, "daemon")
        os.makedirs(statedir, mode=0o700, exist_ok=True)
        self.sched = BackgroundScheduler(
            jobstores={"default": DiskTolerantJobStore(url=f"sqlite:///{statedir}/schedule.sqlite"),
                       "memory": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(workers)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=timezone.utc)

    # -- life --
    def start(self) -> None:
        global _DAEMON
        _DAEMON = self
        self.store.ensure_writable()
        roundstore.remove_stale_temps(self.store)
        self.sched.start(paused=True)
        for aj in self.sched.get_jobs(jobstore="default"):
            kw = aj.kwargs
            if not aj.id.startswith("job:") or "trees" not in kw:
                continue
            uid = int(kw["uid"])
            key = kw["job"] if ":" in kw["job"] else roundstore.job_key(uid, kw["job"])
            job = Job(key, uid)
            for td in kw["trees"]:
                t = Tree(**td)
                t.last_snapshot = self._last_snapshot(job.key, t.pid)
                job.trees[t.pid] = t
            self.jobs[job.key] = job
            if aj.id != "job:" + key:  # saved before job names were scoped by owner
                self.sched.remove_job(aj.id, jobstore="default")
                self._save(job)
            log.info("job %s: %d tree(s) registered (%s), next run %s", job.key, len(job.trees),
                     ", ".join(str(p) for p in job.trees), aj.next_run_time)
        self.sched.add_job(scheduled_retention, IntervalTrigger(seconds=self.retention_every, timezone=timezone.utc),
                           id="retention", jobstore="memory", replace_existing=True)
        # compaction on its own schedule; like retention, never at the same time as a
        # round writing to the store (self.write_lock, and the store's flock)
        self.sched.add_job(scheduled_compaction, IntervalTrigger(seconds=self.compact_every, timezone=timezone.utc),
                           id="compaction", jobstore="memory", replace_existing=True)
        self.sched.resume()

    def stop(self) -> None:
        """Stop scheduling and wait for the rounds in progress: a round either
        commits or removes what it wrote."""
        global _DAEMON
        self.sched.shutdown(wait=True)
        _DAEMON = None

    def _last_snapshot(self, job: str, pid: int) -> str:
        for rec in reversed(roundstore.rounds(self.store, job)):
            for m in rec.members:
                if int(m["root_pid"]) == pid and rec.complete:
                    return m["snapshot"]
        return ""

    # -- persistence (the APScheduler job is the registration) --
    def _save(self, job: Job) -> None:
        kwargs = {"job": job.key, "uid": job.uid, "trees": [t.persisted() for t in job.trees.values()]}
        jid = "job:" + job.key
        trigger = SteadyIntervalTrigger(seconds=job.every, jitter=jitter_for(job.every), timezone=timezone.utc)
        aj = self.sched.get_job(jid, jobstore="default")
        if aj is None:
            self.sched.add_job("snapshotd.daemon.service:scheduled_round", trigger, id=jid, kwargs=kwargs,
                               jobstore="default", name=f"rounds of job {job.key}")
        else:
            self.sched.modify_job(jid, jobstore="default", kwargs=kwargs)
            if aj.trigger.interval.total_seconds() != job.every:
                self.sched.reschedule_job(jid, jobstore="default", trigger=trigger)
        if job.active:
            if self.sched.get_job(jid, jobstore="default").next_run_time is None:
                self.sched.resume_job(jid, jobstore="default")
        else:
            self.sched.pause_job(jid, jobstore="default")

    def _drop(self, job: Job) -> None:
        for t in job.trees.values():
            _drop_tracker(t)
        try:
            self.sched.remove_job("job:" + job.key, jobstore="default")
        except JobLookupError:
            pass
        self.jobs.pop(job.key, None)

    def _retire(self, job: Job, tree: Tree, reason: str) -> None:
        log.info("job %s: tree %d retired: %s", job.key, tree.pid, reason)
        tree.state, tree.reason = "retired", reason
        _drop_tracker(tree)
        self._save(job)

    # -- rounds --
    def scheduled_round(self, name: str) -> None:
        job = self.jobs.get(name)
        if job is None:
            return
        if not job.lock.acquire(blocking=False):
            log.info("job %s: busy (snapshot-now or rollback in progress); skipping this run", name)
            return
        try:
            self._round(job)
        except Exception:
            pass  # logged and recorded in status by _round; retried at the next interval
        finally:
            job.lock.release()

    def _retire_gone(self, job: Job, trees: list) -> None:
        """Retire the trees that exited or whose PID now names another
        process (self.mutex held)."""
        for t in trees:
            st = roundmod.start_time(t.pid)
            if t.state == "active" and (st is None or st != t.start_time):
                self._retire(job, t, "exited" if st is None else "PID reused by another process")

    def _round(self, job: Job) -> dict | None:
        """One round of job (job.lock held). Retires trees that exited, whose
        PID now names another process, or in which a process holds privileges
        the job's owner does not have (checked frozen, by round.py); raises
        if the round failed."""
        with self.mutex:
            self._retire_gone(job, job.active)
            trees = job.active
        if not trees:
            return None
        for t in trees:
            if t.tracker is None:
                # held between rounds: every round after the first reads only
                # the pages written since (uffd-wp + PAGEMAP_SCAN where the
                # kernel has it); the first round, and the first after a
                # daemon restart, compare content hashes instead
                t.tracker = incremental.TreeTracker()  # one tracker per process of the tree
        members = [roundmod.Member(pid=t.pid, start_time=t.start_time, name=t.name, owner_uid=t.uid,
                                   parent=t.last_snapshot, tracker=t.tracker, estimate=t.last_bytes)
                   for t in trees]
        t0 = time.monotonic()
        try:
            with self.write_lock:
                rec, results = roundmod.take_round(self.store, job.key, members, uid=job.uid)
        except Exception as e:
            msg = _msg(e)
            log.warning("job %s: round failed: %s", job.key, msg)
            if roundmod.POISONED and not self.restart_needed:
                # HDF5 failed mid-write (e.g. ENOSPC despite the free-space check): this
                # process cannot safely write HDF5 files any more; start afresh
                self.restart_needed = "HDF5 failed writing a snapshot"
                self.on_restart()
            with self.mutex:
                for t in trees:
                    t.last_error, t.last_error_time = msg, time.time()
                    t.failures += 1
                self._retire_gone(job, trees)  # a tree that died meanwhile is retired, not failed forever
                t = job.trees.get(getattr(e, "pid", 0)) if isinstance(e, roundmod.PrivilegedError) else None
                if t is not None and t.state == "active":  # never snapshotted again
                    self._retire(job, t, msg)
            raise
        dt = time.monotonic() - t0
        with self.mutex:
            for r in results:
                t = job.trees.get(r.pid)
                if t is None:
                    continue
                t.last_snapshot, t.last_round, t.last_time = r.snapshot, rec.id, time.time()
                t.last_bytes, t.last_duration, t.last_frozen = int(r.stats.stored_bytes), dt, r.stats.frozen_s
                t.last_error = ""
                t.snapshots += 1
        log.info("job %s: round %s: %d tree(s), frozen %.1f ms, %.2f s", job.key, rec.id, len(results),
                 results[0].stats.frozen_s * 1000, dt)
        return {"round": rec.id, "job": job.name, "duration_s": round(dt, 6),
                "snapshots": [{"pid": r.pid, "snapshot": r.snapshot, "name": r.name,
                               "stored_bytes": int(r.stats.stored_bytes)} for r in results]}

    # -- retention --
    def _upkeep_done(self, name: str, t0: float, error: str = "") -> None:
        st = self.upkeep[name]
        st["last_run"], st["last_duration"] = time.time(), round(time.monotonic() - t0, 6)
        st["runs"] += 1
        if error:
            st["last_error"], st["last_error_time"] = error, time.time()
            st["failures"] += 1
        else:
            st["last_error"] = ""

    def retention(self) -> None:
        t0 = time.monotonic()
        errors = []
        with self.mutex:
            jobs = list(self.jobs.values())
        deleted = []
        for job in jobs:
            keep = job.keep
            if keep is None:
                continue
            with job.lock:
                try:
                    deleted += self._prune(job, keep)
                except Exception as e:
                    log.warning("job %s: retention failed: %s", job.key, _msg(e))
                    errors.append(f"job {job.key}: {_msg(e)}")
        self.upkeep["retention"]["removed_snapshots"] += len(deleted)
        if deleted or self._gc_pending:
            # free the page packs no snapshot uses any more
            with self.write_lock:
                try:
                    r = self.store.gc(wait=False)
                    self._gc_pending = False
                    if r["removed_packs"]:
                        log.info("gc: removed %d pack(s), %d bytes", len(r["removed_packs"]), r["freed_bytes"])
                    self.upkeep["retention"]["removed_packs"] += len(r["removed_packs"])
                    self.upkeep["retention"]["freed_bytes"] += r["freed_bytes"]
                except Exception as e:
                    self._gc_pending = True
                    log.warning("gc failed (will retry): %s", _msg(e))
                    errors.append(f"gc: {_msg(e)}")
        self._upkeep_done("retention", t0, "; ".join(errors))

    def compaction(self) -> None:
        """Compact the newest complete round of each job with a retention
        whose chains got long or scattered (upkeep.py has the rule); the
        copies become the parents of the job's next rounds."""
        t0 = time.monotonic()
        errors = []
        with self.mutex:
            jobs = [j for j in self.jobs.values() if j.keep is not None]
        for job in jobs:
            if self.restart_needed:
                break
            with job.lock:  # no round, rollback or retention of this job meanwhile
                try:
                    rec = roundstore.latest_complete(self.store, job.key)
                    why = upkeep.compaction_reason(self.store, rec, self.compact_depth, self.compact_packs) \
                        if rec else ""
                    if not why:
                        continue
                    t1 = time.monotonic()
                    with self.write_lock:  # one writer at a time (see __init__)
                        swap = upkeep.compact_round(self.store, job.key, rec)
                    with self.mutex:
                        for t in job.trees.values():
                            if t.last_snapshot in swap:  # the next round's parent
                                t.last_snapshot = swap[t.last_snapshot]
                    st = self.upkeep["compaction"]
                    st["compacted_rounds"] += 1
                    st["last_compacted"], st["last_reason"] = f"{job.key}/{rec.id}", why
                    log.info("job %s: compacted round %s (%s) in %.2f s: %s", job.key, rec.id, why,
                             time.monotonic() - t1, ", ".join(f"{a} -> {b}" for a, b in swap.items()))
                except Exception as e:
                    log.warning("job %s: compaction failed: %s", job.key, _msg(e))
                    errors.append(f"job {job.key}: {_msg(e)}")
                    if roundmod.hdf5_write_failed(e) and not self.restart_needed:
                        # as in _round: this process must not write HDF5 again
                        self.restart_needed = "HDF5 failed writing a compacted snapshot"
                        self.on_restart()
        self._upkeep_done("compaction", t0, "; ".join(errors))

    def _prune(self, job: Job, keep: int) -> list[str]:
        """Keep the newest `keep` complete rounds, delete the others whole
        (record first, then its snapshots; storage/maintenance.py)."""
        out = maintenance.prune(self.store, maintenance.Policy(last=keep), job=job.key, gc=False)
        if out["removed"]:
            log.info("job %s: retention removed %d snapshot(s) of %d round(s)", job.key, len(out["removed"]),
                     len(out["removed_rounds"]))
        return out["removed"]

    # -- the verbs --
    def handle(self, op: str, args: dict, uid: int) -> object:
        fn = getattr(self, "op_" + op.replace("-", "_"), None)
        if fn is None:
            raise ProtocolError(f"unknown request {op!r}")
        return fn(uid, **args)

    # -- which job a caller means (names are scoped by owner: auth.py) --
    def _keys_named(self, name: str) -> set[str]:
        """Keys of every job called name, registered or with rounds stored."""
        with self.mutex:
            keys = set(self.jobs)
        keys |= set(roundstore.jobs(self.store))
        return {k for k in keys if roundstore.split_key(k)[1] == name}

    def _resolve(self, uid: int, ref: str) -> str:
        """The key of the job the caller means by ref: UID:NAME names one
        (the caller's own, or anyone's for root); a plain name is the
        caller's own job of that name; for root, if it has none, the one
        other owner's job of that name (ambiguous if several)."""
        roundstore.check_job(ref)
        if ":" in ref:
            auth.require_key(uid, ref)
            return ref
        if uid != 0:
            return roundstore.job_key(uid, ref)
        keys = self._keys_named(ref)
        if ref in keys or not keys:
            return ref
        if len(keys) > 1:
            raise ServiceError(f"job name {ref!r} is used by several users: say which, as UID:NAME "
                               f"({', '.join(sorted(keys))})")
        return keys.pop()

    def _job(self, uid: int, ref: str) -> Job:
        key = self._resolve(uid, ref)
        with self.mutex:
            job = self.jobs.get(key)
        if job is None:
            raise ServiceError(f"no job {ref!r} is registered")
        auth.require_key(uid, job.key)
        return job

    def _job_of_pid(self, uid: int, pid: int) -> tuple[Job, Tree]:
        """The caller's registration of pid (root: anyone's); the live one
        first, if a stale one of another owner names the same PID."""
        st = roundmod.start_time(pid)
        with self.mutex:
            hits = [(j, j.trees[pid]) for j in self.jobs.values() if pid in j.trees and auth.may_see(uid, j.uid)]
        hits.sort(key=lambda jt: (jt[1].state != "active", jt[1].start_time != st))
        if not hits:
            raise ServiceError(f"PID {pid} is not registered")
        return hits[0]

    def op_register(self, uid: int, pid: int, every: str, job: str | None = None, keep: int | None = None,
                    name: str | None = None) -> dict:
        seconds = parse_duration(every)
        if keep is not None and int(keep) < 1:
            raise ServiceError("--keep must be at least 1")
        pid = int(pid)
        owner, st = auth.claim_process(uid, pid)  # the job is the owner's, whoever registers it
        validate_target(pid)
        if job is not None and ":" in job:
            key = roundstore.check_job(job)
            if roundstore.split_key(key)[0] != owner:
                raise auth.Denied(f"permission denied: PID {pid} belongs to uid {owner}; its job is named "
                                  f"{roundstore.job_key(owner, roundstore.split_key(key)[1])}")
        else:
            key = roundstore.job_key(owner, job or f"pid-{pid}")
        with self.mutex:
            for j in self.jobs.values():
                t = j.trees.get(pid)
                if t is not None and t.state == "active" and t.start_time == st:
                    raise ServiceError(f"PID {pid} is already registered (job {j.name}); unregister it first")
            jb = self.jobs.get(key)
            new_job = jb is None
            if new_job:
                jb = Job(key, owner)
            tree = Tree(pid=pid, start_time=st, uid=owner, every=seconds, name=name or "",
                        keep=int(keep) if keep is not None else None)
            tree.last_snapshot = self._last_snapshot(key, pid)
            old = jb.trees.get(pid)
            jb.trees[pid] = tree
            self.jobs[key] = jb
            try:
                self._save(jb)
                nxt = self.sched.get_job("job:" + key, jobstore="default").next_run_time
            except BaseException:  # a failed request leaves nothing behind
                if old is not None:
                    jb.trees[pid] = old
                else:
                    jb.trees.pop(pid, None)
                if new_job:
                    self._drop(jb)
                else:
                    self._save(jb)
                raise
            # a stale (exited, reused) registration of this PID in another job of
            # the same owner is replaced; another owner's is never touched
            for j in list(self.jobs.values()):
                if j is not jb and j.uid == owner and pid in j.trees and j.trees[pid].start_time != st:
                    del j.trees[pid]
                    self._save(j) if j.trees else self._drop(j)
        log.info("registered PID %d (uid %d) in job %s every %s", pid, owner, key, format_duration(seconds))
        return {"pid": pid, "job": jb.name, "owner_uid": owner, "every": format_duration(seconds), "every_s": seconds,
                "keep": tree.keep, "name": tree.name, "next_run": nxt.timestamp() if nxt else None}

    def op_unregister(self, uid: int, pid: int | None = None, job: str | None = None) -> dict:
        with self.mutex:
            if job is not None:
                jb = self._job(uid, job)
                pids = sorted(jb.trees)
                self._drop(jb)
            else:
                jb, t = self._job_of_pid(uid, int(pid))
                auth.require_key(uid, jb.key)
                pids = [t.pid]
                del jb.trees[t.pid]
                self._save(jb) if jb.trees else self._drop(jb)
        log.info("unregistered %s from job %s", ", ".join(map(str, pids)), jb.key)
        return {"job": jb.name, "owner_uid": jb.uid, "pids": pids}

    def op_status(self, uid: int) -> dict:
        out = []
        with self.mutex:
            for jb in sorted(self.jobs.values(), key=lambda j: j.key):
                if not auth.may_see(uid, jb.uid):
                    continue
                aj = self.sched.get_job("job:" + jb.key, jobstore="default")
                nxt = aj.next_run_time.timestamp() if aj and aj.next_run_time else None
                for t in sorted(jb.trees.values(), key=lambda t: t.pid):
                    out.append({**t.status(), "job": jb.name, "owner_uid": jb.uid,
                                "next_run": nxt if t.state == "active" else None})
        upk = {k: dict(v) for k, v in self.upkeep.items()}
        if uid != 0:  # which jobs were compacted is not every user's business
            upk["compaction"]["last_compacted"] = upk["compaction"]["last_reason"] = ""
            for v in upk.values():
                v["last_error"] = "failed (root sees why)" if v["last_error"] else ""
        return {"daemon_pid": os.getpid(), "store": self.store.path, "started": self.started, "trees": out,
                "upkeep": upk}

    def op_snapshots(self, uid: int, job: str | None = None) -> list:
        if job is not None:
            keys = [self._resolve(uid, job)]
        else:
            with self.mutex:
                keys = sorted(set(roundstore.jobs(self.store)) | set(self.jobs))
            keys = [k for k in keys if auth.may_see(uid, roundstore.split_key(k)[0])]
        rows = []
        for key in keys:
            owner, name = roundstore.split_key(key)
            for rec in roundstore.rounds(self.store, key):  # a user's key holds their rounds only
                for m in rec.members:
                    rows.append({"snapshot": m["snapshot"], "id": m["snapshot"], "job": name, "owner_uid": rec.uid,
                                 "round": rec.id, "pid": m["root_pid"], "name": m.get("name", ""),
                                 "created": rec.created, "stored_bytes": m.get("stored_bytes", 0),
                                 "complete": rec.complete})
        rows.sort(key=lambda r: (r["created"], r["snapshot"]))
        return rows

    def op_snapshot_now(self, uid: int, pid: int | None = None, job: str | None = None) -> dict:
        if job is not None:
            jb = self._job(uid, job)
        else:
            jb, _t = self._job_of_pid(uid, int(pid))
            auth.require_key(uid, jb.key)
        with jb.lock:
            res = self._round(jb)
        if res is None:
            raise ServiceError(f"job {jb.name} has no live tree to snapshot (all retired)")
        return res

    # -- rollback, step by step (daemon/rollback.py does each) --
    def _rollback_round(self, uid: int, key: str, name: str, to: str | None):
        """The round to roll back to: `to`, or the newest complete one the
        caller may see (each round is its recorded owner's)."""
        if to:
            rec = roundstore.find(self.store, key, to)
            if not auth.may_see(uid, rec.uid):
                raise ServiceError(f"job {name} has no round or snapshot {to!r}")
            if not rec.complete:
                raise ServiceError(f"round {rec.id} of job {name} is not complete: {'; '.join(rec.problems)}")
            return rec
        rec = roundstore.latest_complete(self.store, key)  # a user's key holds their rounds only
        if rec is None:
            raise ServiceError(f"job {name} has no complete round to roll back to")
        return rec

    def _adopt_restored(self, jb: Job, rec, restored: list[dict]) -> None:
        """After a rollback the job's registrations name the restored
        processes (new start times, fresh trackers); trees not in the round
        are retired."""
        with self.mutex:
            in_round = set()
            for r in restored:
                t = jb.trees.get(r["pid"])
                if t is None:
                    t = Tree(pid=r["pid"], start_time=0, uid=jb.uid, every=jb.every, name=r["name"])
                    jb.trees[t.pid] = t
                t.start_time = roundmod.start_time(r["pid"]) or 0
                _drop_tracker(t)
                t.state, t.reason = "active", ""
                t.last_snapshot, t.last_round, t.last_error = r["snapshot"], rec.id, ""
                in_round.add(t.pid)
            for t in jb.trees.values():
                if t.pid not in in_round and t.state == "active":
                    t.state, t.reason = "retired", f"not in round {rec.id}"
            self._save(jb)

    def op_rollback(self, uid: int, job: str, to: str | None = None, keep_files: bool = False) -> dict:
        key = self._resolve(uid, job)
        auth.require_key(uid, key)
        name = roundstore.split_key(key)[1]
        with self.mutex:
            jb = self.jobs.get(key)
        if jb is None and not roundstore.rounds(self.store, key):
            raise ServiceError(f"no job {job!r} is registered and the store has no round of it")
        lock = jb.lock if jb else threading.Lock()
        t0 = time.monotonic()
        with lock:
            rec = self._rollback_round(uid, key, name, to)
            owner = rec.uid  # the round's owner, forever: its processes come back as no more than that
            # everything that can be refused is refused before anything is killed
            rb.check_images(self.store, rec.members, owner)
            rb.check_user_access(self.store, rec.members)
            own: dict[int, set] = {}
            if jb and jb.uid == owner:  # only this owner's registrations say which processes are the job's
                for t in jb.trees.values():
                    own.setdefault(t.pid, set()).add(t.start_time)
            killed = rb.kill_old(rec.members, own, owner)
            cut, notes = ([], []) if keep_files else rb.cut_files(self.store, rec.members, owner)
            restored, rnotes = rb.restore_members(self.store, rec.members, owner)
            if jb:
                self._adopt_restored(jb, rec, restored)
        dt = time.monotonic() - t0
        log.info("job %s: rolled back to round %s (%d tree(s), %d file(s) cut) in %.2f s", key, rec.id,
                 len(restored), len(cut), dt)
        return {"job": name, "owner_uid": owner, "round": rec.id, "restored": restored, "killed": killed, "cut": cut,
                "keep_files": bool(keep_files), "notes": notes + rnotes, "wall_s": round(dt, 6)}
