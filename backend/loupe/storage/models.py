"""SQLAlchemy tables. Large arrays never live here: rows point at artifact files."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, Float, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that reads back timezone-aware in UTC: SQLite keeps no zone and hands back naive
    datetimes, which the API would send without an offset (not an RFC 3339 date-time)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime()}


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress_done: Mapped[float] = mapped_column(Float, default=0.0)
    progress_total: Mapped[float | None] = mapped_column(Float, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    artifacts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ModelRecord(Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(32))  # demo | hf-dir | hub
    path: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvalResult(Base):
    __tablename__ = "evals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    model_id: Mapped[str] = mapped_column(String(100), index=True)
    results: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SAERecord(Base):
    """A registered SAE: trained here (source "demo"), read from disk ("disk") or sae-lens's registry."""

    __tablename__ = "saes"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(100), index=True)
    hook_name: Mapped[str] = mapped_column(String(200))
    architecture: Mapped[str] = mapped_column(String(64))
    d_in: Mapped[int] = mapped_column(Integer)
    d_sae: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dashboards: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"status", "dir", "key", ...}
    # what its dashboards are built on (None: the world's dataset)
    dataset_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # 1, 2, ...: one more each time its weights change (a retrain under the same id); labels carry the
    # version they were written for. weights_key: the digest of the weights that version has.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    weights_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SAEFeature(Base):
    """One feature's dashboard summary; per-token example arrays live in the dashboard's files."""

    __tablename__ = "sae_features"
    __table_args__ = (Index("ix_sae_features_density", "sae_id", "density"),)

    sae_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    density: Mapped[float] = mapped_column(Float)
    max_activation: Mapped[float] = mapped_column(Float)
    mean_activation: Mapped[float] = mapped_column(Float)
    capacity: Mapped[float] = mapped_column(Float)
    auto_label: Mapped[str] = mapped_column(Text)
    top_domain: Mapped[str | None] = mapped_column(String(64), nullable=True)
    top_domain_share: Mapped[float | None] = mapped_column(Float, nullable=True)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)


class FeatureLabel(Base):
    """A person's label for a feature; kept apart from SAEFeature so rebuilding dashboards keeps it."""

    __tablename__ = "feature_labels"

    sae_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str] = mapped_column(Text)
    # the SAE's version it was written for: on another version the index names another feature
    sae_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class VectorRecord(Base):
    """A steering direction (e.g. the refusal direction): metadata and its selection table; r, mu-
    and mu+ live in the safetensors file at `path`."""

    __tablename__ = "vectors"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    model_id: Mapped[str] = mapped_column(String(100), index=True)
    hook: Mapped[str] = mapped_column(String(200))  # where it was read, and where addition/ACE apply
    layer: Mapped[int] = mapped_column(Integer)
    position: Mapped[int | None] = mapped_column(Integer, nullable=True)  # post-instruction position (negative)
    d_model: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(32))  # build | computed | import
    path: Mapped[str] = mapped_column(Text)
    scores: Mapped[dict[str, Any]] = mapped_column(default=dict)
    candidates: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"rows": [...], ...}
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetRecord(Base):
    """A registered dataset: its documents live under artifacts/datasets/<id>/ (the world's own dataset
    has no row)."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(32))  # file | upload
    path: Mapped[str] = mapped_column(Text)  # where it came from (a path, or an upload's file name)
    format: Mapped[str] = mapped_column(String(32))  # jsonl-text | jsonl-messages | txt | parquet-text | ...
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
