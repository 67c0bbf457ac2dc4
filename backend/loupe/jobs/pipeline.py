"""A build is an ordered list of steps; each runs as a job, writes its artifacts atomically and
is skipped on the next build once its job is done and its manifest exists."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loupe.jobs.executors import Executor, InlineExecutor
from loupe.jobs.runner import JobContext, ProgressListener, run_job
from loupe.storage.artifacts import read_manifest
from loupe.storage.repositories import JobRepository


@dataclass(frozen=True)
class Step:
    name: str  # job name, e.g. "demo.model"
    title: str  # what the progress bar says
    output: Path  # artifact directory; complete iff it has a manifest
    body: Callable[[JobContext], dict[str, Any] | None]
    background: bool = False  # may run after the server starts
    key: str = ""  # config fingerprint; a manifest with another key is stale

    def is_complete(self, repo: JobRepository) -> bool:
        # The manifest is written last and renamed into place with its directory, so its presence
        # means the artifact is whole; the key guards against artifacts of another configuration.
        manifest = read_manifest(self.output)
        return manifest is not None and manifest.get("key", "") == self.key


class Pipeline:
    def __init__(self, repo: JobRepository, steps: list[Step], executor: Executor | None = None):
        self.repo = repo
        self.steps = steps
        self.executor = executor or InlineExecutor()

    def pending(self, background: bool | None = None) -> list[Step]:
        return [
            s for s in self.steps if not s.is_complete(self.repo) and (background is None or s.background == background)
        ]

    def run(
        self,
        steps: list[Step],
        listener_for: Callable[[Step], ProgressListener] | None = None,
        on_skip: Callable[[Step], None] | None = None,
        on_done: Callable[[Step], None] | None = None,
    ) -> None:
        """Run the given steps in order, skipping finished ones; stops at the first failure."""
        for step in steps:
            if step.is_complete(self.repo):
                if on_skip:
                    on_skip(step)
                continue
            job = self.repo.create("build", step.name, {"output": str(step.output)})
            listeners = [listener_for(step)] if listener_for else []
            fut = self.executor.submit(lambda s=step, j=job.id, l=listeners: run_job(self.repo, j, s.body, l))
            fut.result()
            if on_done:
                on_done(step)
