"""The only place that speaks SQL. Functions return detached ORM rows or plain dicts.

Long because every table's queries live here and nowhere else (the architecture's rule): one small
repository per table, the SAE one the largest (features, labels by version, the dashboards' commit)."""

from __future__ import annotations

import builtins
import os
import socket
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .artifacts import pid_alive
from .db import Database
from .models import (
    DatasetRecord,
    EvalResult,
    FeatureLabel,
    Job,
    ModelRecord,
    SAEFeature,
    SAERecord,
    VectorRecord,
    utcnow,
)


def _upsert(s: Session, table: Any, key: dict[str, Any], insert: dict[str, Any], update: dict[str, Any]) -> None:
    """One INSERT ... ON CONFLICT (key) DO UPDATE: atomic, so two requests writing the same row at
    once both succeed (the later write wins) where a read-then-insert made one of them an IntegrityError."""
    dialect = s.get_bind().dialect.name
    stmt: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        stmt = postgresql.insert(table).values(**key, **insert)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).values(**key, **insert)
    else:
        raise NotImplementedError(f"no upsert for the {dialect} dialect")
    s.execute(stmt.on_conflict_do_update(index_elements=list(key), set_=update))


class JobRepository:
    def __init__(self, db: Database):
        self.db = db

    def create(self, kind: str, name: str, params: dict[str, Any] | None = None) -> Job:
        with self.db.session() as s:
            job = Job(
                kind=kind,
                name=name,
                params=params or {},
                status="queued",
                progress_done=0.0,
                message="queued",
                artifacts={},
                pid=os.getpid(),  # queued by this process: fail_orphans leaves it to us
                host=socket.gethostname(),
            )
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

    def active(self) -> builtins.list[Job]:
        """Queued and running jobs."""
        with self.db.session() as s:
            return list(s.scalars(select(Job).where(Job.status.in_(("queued", "running"))).order_by(Job.id)))

    def many(self, ids: builtins.list[int]) -> builtins.list[Job]:
        """The rows of `ids`, in that order (missing ones left out)."""
        with self.db.session() as s:
            found = {j.id: j for j in s.scalars(select(Job).where(Job.id.in_(ids)))} if ids else {}
            return [found[i] for i in ids if i in found]

    def mark_running(self, job_id: int) -> None:
        with self.db.session() as s:
            job = s.get_one(Job, job_id)
            job.status = "running"
            job.started_at = utcnow()
            job.pid = os.getpid()
            job.host = socket.gethostname()
            job.message = "running"

    def progress(self, job_id: int, done: float, total: float | None, message: str) -> None:
        with self.db.session() as s:
            job = s.get_one(Job, job_id)
            job.progress_done = float(done)
            job.progress_total = None if total is None else float(total)
            job.message = message

    def finish(self, job_id: int, artifacts: dict[str, Any] | None = None, message: str = "done") -> None:
        with self.db.session() as s:
            job = s.get_one(Job, job_id)
            job.status = "done"
            job.finished_at = utcnow()
            job.message = message
            if job.progress_total is not None:
                job.progress_done = job.progress_total
            if artifacts:
                job.artifacts = {**(job.artifacts or {}), **artifacts}

    def fail(self, job_id: int, error: str, message: str = "failed") -> None:
        with self.db.session() as s:
            job = s.get_one(Job, job_id)
            job.status = "failed"
            job.finished_at = utcnow()
            job.error = error
            job.message = message

    def fail_orphans(self) -> int:
        """Jobs left queued/running by a process on this host that no longer exists (killed, crashed)."""
        host = socket.gethostname()
        n = 0
        with self.db.session() as s:
            for job in s.scalars(select(Job).where(Job.status.in_(("queued", "running")))):
                if job.host not in (None, host):
                    continue  # another machine's job: not ours to judge
                if job.pid is not None and job.pid != os.getpid() and pid_alive(job.pid):
                    continue
                if job.pid == os.getpid():
                    continue
                job.status = "failed"
                job.finished_at = utcnow()
                job.error = "interrupted: the process running this job stopped before it finished"
                job.message = "interrupted"
                n += 1
        return n


class ModelRepository:
    def __init__(self, db: Database):
        self.db = db

    def upsert(self, id: str, name: str, source: str, path: str, config: dict[str, Any]) -> ModelRecord:
        fields = {"name": name, "source": source, "path": path, "config": config}
        with self.db.session() as s:
            _upsert(s, ModelRecord, {"id": id}, {**fields, "created_at": utcnow()}, fields)
        with self.db.session() as s:
            return s.get_one(ModelRecord, id)

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


class VectorRepository:
    def __init__(self, db: Database):
        self.db = db

    def upsert(self, id: str, **fields: Any) -> VectorRecord:
        with self.db.session() as s:
            _upsert(s, VectorRecord, {"id": id}, {"created_at": utcnow(), **fields}, fields)
        with self.db.session() as s:
            return s.get_one(VectorRecord, id)

    def get(self, id: str) -> VectorRecord | None:
        with self.db.session() as s:
            return s.get(VectorRecord, id)

    def list(self, model_id: str | None = None) -> list[VectorRecord]:
        with self.db.session() as s:
            q = select(VectorRecord).order_by(VectorRecord.created_at)
            if model_id:
                q = q.where(VectorRecord.model_id == model_id)
            return list(s.scalars(q))

    def delete(self, id: str) -> bool:
        with self.db.session() as s:
            rec = s.get(VectorRecord, id)
            if rec is None:
                return False
            s.delete(rec)
            return True


def _with_labels(q):
    """`q` over SAEFeature with each feature's person's label joined in (None where there is none)."""
    return q.outerjoin(
        FeatureLabel, (FeatureLabel.sae_id == SAEFeature.sae_id) & (FeatureLabel.index == SAEFeature.index)
    )


class SAERepository:
    """Registered SAEs, their features' dashboard rows and people's labels."""

    def __init__(self, db: Database):
        self.db = db

    def upsert(self, id: str, **fields: Any) -> SAERecord:
        with self.db.session() as s:
            _upsert(
                s, SAERecord, {"id": id}, {"metrics": {}, "dashboards": {}, "created_at": utcnow(), **fields}, fields
            )
        with self.db.session() as s:
            return s.get_one(SAERecord, id)

    def update(self, id: str, **fields: Any) -> None:
        with self.db.session() as s:
            rec = s.get(SAERecord, id)
            if rec is not None:
                for k, v in fields.items():
                    setattr(rec, k, v)

    def merge_dashboards(self, id: str, fields: dict[str, Any]) -> None:
        """Add `fields` to an SAE's dashboards column in one transaction (the dashboard build may write it too)."""
        with self.db.session() as s:
            rec = s.get(SAERecord, id)
            if rec is not None:
                rec.dashboards = {**(rec.dashboards or {}), **fields}

    def get(self, id: str) -> SAERecord | None:
        with self.db.session() as s:
            return s.get(SAERecord, id)

    def list(self, model_id: str | None = None) -> list[SAERecord]:
        with self.db.session() as s:
            q = select(SAERecord).order_by(SAERecord.created_at, SAERecord.id)
            if model_id:
                q = q.where(SAERecord.model_id == model_id)
            return list(s.scalars(q))

    def delete(self, id: str) -> bool:
        """An SAE's row, its feature rows and people's labels of its features."""
        with self.db.session() as s:
            s.execute(delete(SAEFeature).where(SAEFeature.sae_id == id))
            s.execute(delete(FeatureLabel).where(FeatureLabel.sae_id == id))
            rec = s.get(SAERecord, id)
            if rec is None:
                return False
            s.delete(rec)
            return True

    def replace_features(self, sae_id: str, rows: builtins.list[dict[str, Any]]) -> None:
        """All feature rows of an SAE, swapped in one transaction (readers see old or new, never half)."""
        with self.db.session() as s:
            s.execute(delete(SAEFeature).where(SAEFeature.sae_id == sae_id))
            s.execute(insert(SAEFeature), [{"sae_id": sae_id, **r} for r in rows])

    def commit_dashboards(self, sae_id: str, rows: builtins.list[dict[str, Any]], fields: dict[str, Any]) -> None:
        """The dashboards' commit point: all feature rows swapped and `fields` (with the build's key)
        merged into the SAE's dashboards column, in one transaction."""
        with self.db.session() as s:
            rec = s.get(SAERecord, sae_id)
            if rec is None:
                raise KeyError(f"no SAE {sae_id!r}")
            s.execute(delete(SAEFeature).where(SAEFeature.sae_id == sae_id))
            s.execute(insert(SAEFeature), [{"sae_id": sae_id, **r} for r in rows])
            rec.dashboards = {**(rec.dashboards or {}), **fields}

    def set_weights(self, sae_id: str, weights_key: str) -> SAERecord | None:
        """Record the digest of the SAE's weights; when it differs from the one recorded, the weights
        have changed (a retrain under the same id): the version goes up by one, in the same transaction."""
        with self.db.session() as s:
            rec = s.get(SAERecord, sae_id)
            if rec is None:
                return None
            if rec.weights_key is not None and rec.weights_key != weights_key:
                rec.version = (rec.version or 1) + 1
            rec.weights_key = weights_key
            s.flush()
            return rec

    def dashboards_key(self, sae_id: str) -> str | None:
        """The key of the dashboards last committed for this SAE (None: none)."""
        rec = self.get(sae_id)
        return None if rec is None else (rec.dashboards or {}).get("key")

    def count_features(self, sae_id: str) -> int:
        with self.db.session() as s:
            return int(s.scalar(select(func.count()).select_from(SAEFeature).where(SAEFeature.sae_id == sae_id)) or 0)

    def feature(self, sae_id: str, index: int) -> SAEFeature | None:
        with self.db.session() as s:
            return s.get(SAEFeature, (sae_id, index))

    def features(
        self,
        sae_id: str,
        sort: str = "index",
        descending: bool = False,
        offset: int = 0,
        limit: int = 50,
        query: str | None = None,
        domain: str | None = None,
        min_density: float | None = None,
        max_density: float | None = None,
    ) -> tuple[int, builtins.list[tuple[SAEFeature, str | None, int | None]]]:
        """(total matching, page of (feature row, user label, the SAE version it was written for))
        sorted by a column."""
        col = {
            "index": SAEFeature.index,
            "density": SAEFeature.density,
            "max_activation": SAEFeature.max_activation,
            "capacity": SAEFeature.capacity,
            "top_domain_share": SAEFeature.top_domain_share,
        }[sort]
        q = _with_labels(select(SAEFeature, FeatureLabel.label, FeatureLabel.sae_version)).where(
            SAEFeature.sae_id == sae_id
        )
        if query:
            like = f"%{query.lower()}%"
            q = q.where(
                func.lower(SAEFeature.auto_label).like(like)
                | func.lower(func.coalesce(FeatureLabel.label, "")).like(like)
            )
        if domain:
            q = q.where(SAEFeature.top_domain == domain)
        if min_density is not None:
            q = q.where(SAEFeature.density >= min_density)
        if max_density is not None:
            q = q.where(SAEFeature.density <= max_density)
        with self.db.session() as s:
            total = int(s.scalar(select(func.count()).select_from(q.subquery())) or 0)
            order = col.desc() if descending else col.asc()
            rows = s.execute(q.order_by(order, SAEFeature.index).offset(offset).limit(limit)).all()
            return total, [(r[0], r[1], r[2]) for r in rows]

    def display_labels(self, sae_id: str, indices: builtins.list[int], version: int) -> dict[int, str]:
        """{index: the person's label written for `version` of the SAE, else the automatic one} for the
        given features."""
        if not indices:
            return {}
        with self.db.session() as s:
            q = _with_labels(
                select(SAEFeature.index, SAEFeature.auto_label, FeatureLabel.label, FeatureLabel.sae_version)
            ).where(SAEFeature.sae_id == sae_id, SAEFeature.index.in_(indices))
            return {int(i): (lab if lab and v == version else auto) for i, auto, lab, v in s.execute(q)}

    def labels_around(
        self, sae_id: str, index: int, neighbours: builtins.list[int], version: int
    ) -> tuple[tuple[str, int] | None, dict[int, str]]:
        """((the person's label of `index`, the SAE version it was written for) or None, {neighbour: its
        display label for `version`}) in one query."""
        with self.db.session() as s:
            q = _with_labels(
                select(SAEFeature.index, SAEFeature.auto_label, FeatureLabel.label, FeatureLabel.sae_version)
            ).where(SAEFeature.sae_id == sae_id, SAEFeature.index.in_([index, *neighbours]))
            found = {int(i): (auto, lab, v) for i, auto, lab, v in s.execute(q)}
        _, lab, v = found.get(index, (None, None, None))
        own = (lab, int(v)) if lab else None
        shown = {
            i: (found[i][1] if found[i][1] and found[i][2] == version else found[i][0])
            for i in neighbours
            if i in found
        }
        return own, shown

    def label(self, sae_id: str, index: int) -> str | None:
        with self.db.session() as s:
            row = s.get(FeatureLabel, (sae_id, index))
            return row.label if row else None

    def set_label(self, sae_id: str, index: int, label: str, version: int = 1) -> None:
        """A person's label of feature `index` as of `version` of the SAE (empty: remove it). Atomic:
        concurrent PUTs of one label never collide."""
        key = {"sae_id": sae_id, "index": index}
        with self.db.session() as s:
            if not label:
                s.execute(delete(FeatureLabel).where(FeatureLabel.sae_id == sae_id, FeatureLabel.index == index))
                return
            now = utcnow()
            values = {"label": label, "sae_version": version, "updated_at": now}
            _upsert(s, FeatureLabel, key, values, values)


class DatasetRepository:
    def __init__(self, db: Database):
        self.db = db

    def add(self, id: str, **fields: Any) -> DatasetRecord:
        with self.db.session() as s:
            rec = DatasetRecord(id=id, **fields)
            s.add(rec)
            s.flush()
            return rec

    def get(self, id: str) -> DatasetRecord | None:
        with self.db.session() as s:
            return s.get(DatasetRecord, id)

    def list(self) -> builtins.list[DatasetRecord]:
        with self.db.session() as s:
            return list(s.scalars(select(DatasetRecord).order_by(DatasetRecord.created_at, DatasetRecord.id)))

    def delete(self, id: str) -> bool:
        with self.db.session() as s:
            rec = s.get(DatasetRecord, id)
            if rec is None:
                return False
            s.delete(rec)
            return True
