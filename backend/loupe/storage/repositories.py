"""The only place that speaks SQL. Functions return detached ORM rows or plain dicts."""

from __future__ import annotations

import os
import socket
from typing import Any

from sqlalchemy import select

from .db import Database
from .models import EvalResult, Job, ModelRecord, utcnow


class JobRepository:
    def __init__(self, db: Database):
        self.db = db

    def create(self, kind: str, name: str, params: dict[str, Any] | None = None) -> Job:
        with self.db.session() as s:
            job = Job(kind=kind, name=name, params=params or {}, status="queued", progress_done=0.0,
                      message="queued", artifacts={})
            s.add(job)
            s.flush()
            return job

    def get(self, job_id: int) -> Job | None:
        with self.db.session() as s:
            return s.get(Job, job_id)

    def list(self, limit: int = 200, kind: str | None = None) -> list[Job]:
        with self.db.session() as s:
            q = select(Job).order_by(Job.id.desc()).limit(limit)
            if kind:
                q = q.where(Job.kind == kind)
            return list(s.scalars(q))

    def latest_done(self, name: str) -> Job | None:
        with self.db.session() as s:
            q = select(Job).where(Job.name == name, Job.status == "done").order_by(Job.id.desc()).limit(1)
            return s.scalars(q).first()

    def latest(self, name: str) -> Job | None:
        with self.db.session() as s:
            return s.scalars(select(Job).where(Job.name == name).order_by(Job.id.desc()).limit(1)).first()

    def mark_running(self, job_id: int) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            job.status = "running"
            job.started_at = utcnow()
            job.pid = os.getpid()
            job.host = socket.gethostname()
            job.message = "running"

    def progress(self, job_id: int, done: float, total: float | None, message: str) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            job.progress_done = float(done)
            job.progress_total = None if total is None else float(total)
            job.message = message

    def finish(self, job_id: int, artifacts: dict[str, Any] | None = None, message: str = "done") -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            job.status = "done"
            job.finished_at = utcnow()
            job.message = message
            if job.progress_total is not None:
                job.progress_done = job.progress_total
            if artifacts:
                job.artifacts = {**(job.artifacts or {}), **artifacts}

    def fail(self, job_id: int, error: str) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            job.status = "failed"
            job.finished_at = utcnow()
            job.error = error
            job.message = "failed"

    def fail_orphans(self) -> int:
        """Jobs left queued/running by a process on this host that no longer exists (killed, crashed)."""
        host = socket.gethostname()
        n = 0
        with self.db.session() as s:
            for job in s.scalars(select(Job).where(Job.status.in_(("queued", "running")))):
                if job.host not in (None, host):
                    continue  # another machine's job: not ours to judge
                if job.pid is not None and job.pid != os.getpid() and _alive(job.pid):
                    continue
                if job.pid == os.getpid():
                    continue
                job.status = "failed"
                job.finished_at = utcnow()
                job.error = "interrupted: the process running this job stopped before it finished"
                job.message = "interrupted"
                n += 1
        return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ModelRepository:
    def __init__(self, db: Database):
        self.db = db

    def upsert(self, id: str, name: str, source: str, path: str, config: dict[str, Any]) -> ModelRecord:
        with self.db.session() as s:
            rec = s.get(ModelRecord, id)
            if rec is None:
                rec = ModelRecord(id=id, name=name, source=source, path=path, config=config)
                s.add(rec)
            else:
                rec.name, rec.source, rec.path, rec.config = name, source, path, config
            s.flush()
            return rec

    def get(self, id: str) -> ModelRecord | None:
        with self.db.session() as s:
            return s.get(ModelRecord, id)

    def list(self) -> list[ModelRecord]:
        with self.db.session() as s:
            return list(s.scalars(select(ModelRecord).order_by(ModelRecord.created_at)))


class EvalRepository:
    def __init__(self, db: Database):
        self.db = db

    def add(self, kind: str, model_id: str, results: dict[str, Any]) -> EvalResult:
        with self.db.session() as s:
            row = EvalResult(kind=kind, model_id=model_id, results=results)
            s.add(row)
            s.flush()
            return row

    def list(self, kind: str | None = None, limit: int = 50) -> list[EvalResult]:
        with self.db.session() as s:
            q = select(EvalResult).order_by(EvalResult.id.desc()).limit(limit)
            if kind:
                q = q.where(EvalResult.kind == kind)
            return list(s.scalars(q))
