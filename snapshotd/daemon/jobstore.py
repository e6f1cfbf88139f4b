"""The persistent job store: APScheduler's SQLAlchemy store on sqlite, made to
survive a full disk.

APScheduler updates a job's next run time in the store after every run; if that
write fails (sqlite: "database or disk is full") its scheduler thread dies and
nothing is ever scheduled again. Here a failed update is kept in memory (and
overrides the stored row) until a later write succeeds, so scheduling goes on
and the store catches up once there is room."""
from __future__ import annotations

import logging

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("snapshotd")


class DiskTolerantJobStore(SQLAlchemyJobStore):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.pending: dict = {}  # job id -> Job whose update is not on disk yet

    def _flush(self) -> None:
        for jid, job in list(self.pending.items()):
            try:
                super().update_job(job)
            except SQLAlchemyError:
                return
            self.pending.pop(jid, None)
            log.info("schedule store: caught up with job %s", jid)

    def update_job(self, job):
        try:
            super().update_job(job)
            self.pending.pop(job.id, None)
        except SQLAlchemyError as e:
            if job.id not in self.pending:
                log.warning("schedule store: cannot save job %s (%s); kept in memory", job.id,
                            str(getattr(e, "orig", e)))
            self.pending[job.id] = job

    def lookup_job(self, job_id):
        return self.pending.get(job_id) or super().lookup_job(job_id)

    def get_all_jobs(self):
        self._flush()
        jobs = {j.id: j for j in super().get_all_jobs()}
        jobs.update(self.pending)
        out = list(jobs.values())
        out.sort(key=lambda j: (j.next_run_time is None, j.next_run_time.timestamp() if j.next_run_time else 0))
        return out

    def get_due_jobs(self, now):
        if not self.pending:
            return super().get_due_jobs(now)
        return [j for j in self.get_all_jobs() if j.next_run_time is not None and j.next_run_time <= now]

    def get_next_run_time(self):
        if not self.pending:
            return super().get_next_run_time()
        times = [j.next_run_time for j in self.get_all_jobs() if j.next_run_time is not None]
        return min(times) if times else None

    def remove_job(self, job_id):
        self.pending.pop(job_id, None)
        super().remove_job(job_id)
