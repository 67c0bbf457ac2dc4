"""The workspace: settings + database + artifact directories, opened once per process."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from loupe.settings import Settings
from loupe.storage.artifacts import clean_scratch
from loupe.storage.db import Database
from loupe.storage.repositories import (
    DatasetRepository,
    EvalRepository,
    JobRepository,
    ModelRepository,
    SAERepository,
    VectorRepository,
)


@dataclass
class Workspace:
    settings: Settings
    db: Database
    jobs: JobRepository
    models: ModelRepository
    evals: EvalRepository
    saes: SAERepository

    @classmethod
    def open(cls, settings: Settings) -> Workspace:
        settings.workspace.mkdir(parents=True, exist_ok=True)
        settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.resolved_database_url)
        db.migrate(settings.workspace)
        ws = cls(settings, db, JobRepository(db), ModelRepository(db), EvalRepository(db), SAERepository(db))
        clean_scratch(settings.artifacts_dir)
        ws.jobs.fail_orphans()
        return ws

    @cached_property
    def vectors(self) -> VectorRepository:
        return VectorRepository(self.db)

    @cached_property
    def datasets(self) -> DatasetRepository:
        return DatasetRepository(self.db)

    def artifact(self, *parts: str) -> Path:
        return self.settings.artifacts_dir.joinpath(*parts)

    def close(self) -> None:
        self.db.dispose()
