"""A build is an ordered list of steps; each runs as a job, writes its artifacts atomically and
is skipped on the next build once its manifest exists with the step's key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loupe.core.config import Progress
from loupe.faults import crash_point
from loupe.jobs.runner import BUILD, JobContext, JobRunner
from loupe.storage.artifacts import read_manifest
from loupe.storage.models import Job


@dataclass(frozen=True)
class Step:
    name: str  # job name, e.g. "demo.model"
    title: str  # what the progress bar says
    output: Path  # artifact directory; complete iff it has a manifest
    body: Callable[[JobContext], dict[str, Any] | None]
    background: bool = False  # may run after the server starts
    key: str = ""  # config fingerprint; a manifest with another key is stale
    # where a step also writes database rows, its commit point: the key the database committed last
    # (the step is done only when it equals `key` too; see services.saes.dashboards)
    committed: Callable[[], str | None] | None = None

    def is_complete(self) -> bool:
        # The manifest is written last and renamed into place with its directory, so its presence
        # means the artifact is whole; the key guards against artifacts of another configuration.
        manifest = read_manifest(self.output)
        if manifest is None or manifest.get("key", "") != self.key:
            return False
        return self.committed is None or self.committed() == self.key


class Pipeline:
    def __init__(self, runner: JobRunner, steps: list[Step]):
        self.runner = runner
        self.steps = steps

    def pending(self, background: bool | None = None) -> list[Step]:
        return [s for s in self.steps if not s.is_complete() and (background is None or s.background == background)]

    def run(
        self,
        steps: list[Step],
        listener_for: Callable[[Step], Progress] | None = None,
        on_skip: Callable[[Step], None] | None = None,
        on_done: Callable[[Step], None] | None = None,
    ) -> None:
        """Run the given steps in order in this thread, skipping finished ones; stops at the first failure."""
        for step in steps:
            if step.is_complete():
                if on_skip:
                    on_skip(step)
                continue
            listeners = [listener_for(step)] if listener_for else []
            self.runner.run("build", step.name, {"output": str(step.output)}, _body(step), listeners)
            if on_done:
                on_done(step)

    def submit(self, steps: list[Step], priority: int = BUILD) -> None:
        """Queue the unfinished steps as the world's background chain: every job row is made now, so the
        Jobs page and each analysis's status show what is queued; each runs when the one before it
        succeeds, and a failure stops the rest (as `run` does). The world's own build is never refused."""
        self.submit_chain(steps, priority, bounded=False)

    def submit_chain(
        self,
        steps: list[Step],
        priority: int = BUILD,
        params: dict[str, Any] | None = None,
        dedupe: str | None = None,
        bounded: bool = True,
    ) -> list[Job]:
        """Queue the unfinished steps as a chain whose job rows are all made now (JobRunner.submit_chain),
        so a caller can report every job id at once. A step built meanwhile by another chain is skipped
        when its turn comes. `dedupe`: as JobRunner's (a request that made an active chain joins it)."""
        todo = [s for s in steps if not s.is_complete()]
        items = [(s.name, {"output": str(s.output), **(params or {})}, _unless_complete(s)) for s in todo]
        return self.runner.submit_chain("build", items, priority, dedupe=dedupe, bounded=bounded) if items else []


def _body(step: Step) -> Callable[[JobContext], dict[str, Any] | None]:
    """The step's body, with a crash point between its end and its job's "done" (loupe.faults)."""

    def body(ctx: JobContext) -> dict[str, Any] | None:
        out = step.body(ctx)
        crash_point(f"step.end:{step.name}")
        return out

    return body


def _unless_complete(step: Step) -> Callable[[JobContext], dict[str, Any] | None]:
    def body(ctx: JobContext) -> dict[str, Any] | None:
        if step.is_complete():
            return {"skipped": "already built"}
        return _body(step)(ctx)

    return body
