"""Persistent jobs: a row per job, progress written as it goes, errors kept."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loupe.storage.repositories import JobRepository

ProgressListener = Callable[[float, float | None, str], None]


@dataclass
class JobContext:
    """Handed to job bodies: report progress; the row is updated at most every `interval` s."""

    job_id: int
    repo: JobRepository
    listeners: list[ProgressListener] = field(default_factory=list)
    interval: float = 0.5
    _last: float = 0.0

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        for listener in self.listeners:
            listener(done, total, message)
        now = time.monotonic()
        if now - self._last >= self.interval or (total is not None and done >= total):
            self._last = now
            self.repo.progress(self.job_id, done, total, message)


def run_job(
    repo: JobRepository,
    job_id: int,
    body: Callable[[JobContext], dict[str, Any] | None],
    listeners: list[ProgressListener] | None = None,
) -> dict[str, Any]:
    """Run `body` as job `job_id`: running -> done (with its artifacts) or failed (with the error)."""
    repo.mark_running(job_id)
    ctx = JobContext(job_id=job_id, repo=repo, listeners=list(listeners or []))
    try:
        artifacts = body(ctx) or {}
    except BaseException as exc:
        repo.fail(job_id, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}")
        raise
    repo.finish(job_id, artifacts=artifacts)
    return artifacts
