"""The one job runner: every piece of background work in Loupe is a job row run here.

A job is a body `fn(ctx) -> artifacts` with a row in the `jobs` table (queued -> running -> done |
failed, progress and errors kept). `JobRunner.submit` queues it by priority (lower runs first, FIFO
within a priority) for the executor's workers; `run_job` runs one in the caller's thread (the CLI's
foreground build, `wait=True` callers). Cancellation is cooperative: `cancel` marks a queued job
failed at once and asks a running one to stop, which its body notices at its next `ctx.progress`
(or `ctx.check_cancelled()`); its artifacts are written atomically, so a stopped job leaves none."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loupe.core.config import Progress
from loupe.jobs.executors import Executor, ThreadExecutor
from loupe.storage.models import Job
from loupe.storage.repositories import JobRepository

log = logging.getLogger("loupe.jobs")

JobBody = Callable[["JobContext"], dict[str, Any] | None]

# Priorities: what a person asked for now runs before the world's background build.
INTERACTIVE = 0
BUILD = 10

CANCELLED = "cancelled by request"


class JobCancelled(Exception):
    """Raised inside a job body when its job was cancelled."""


@dataclass
class JobContext:
    """Handed to job bodies: report progress (the row is updated at most every `interval` s) and
    notice cancellation."""

    job_id: int
    repo: JobRepository
    listeners: list[Progress] = field(default_factory=list)
    interval: float = 0.5
    cancel: threading.Event = field(default_factory=threading.Event)
    _last: float = 0.0

    def check_cancelled(self) -> None:
        if self.cancel.is_set():
            raise JobCancelled(CANCELLED)

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        self.check_cancelled()
        for listener in self.listeners:
            listener(done, total, message)
        now = time.monotonic()
        if now - self._last >= self.interval or (total is not None and done >= total):
            self._last = now
            self.repo.progress(self.job_id, done, total, message)


def run_job(
    repo: JobRepository,
    job_id: int,
    body: JobBody,
    listeners: list[Progress] | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Run `body` as job `job_id` in this thread: running -> done (with its artifacts) or failed."""
    repo.mark_running(job_id)
    ctx = JobContext(job_id=job_id, repo=repo, listeners=list(listeners or []), cancel=cancel or threading.Event())
    try:
        ctx.check_cancelled()
        artifacts = body(ctx) or {}
    except JobCancelled:
        repo.fail(job_id, CANCELLED, message="cancelled")
        raise
    except BaseException as exc:
        repo.fail(job_id, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}")
        raise
    repo.finish(job_id, artifacts=artifacts)
    return artifacts


@dataclass(order=True)
class _Queued:
    priority: int
    seq: int
    job_id: int = field(compare=False)
    body: JobBody = field(compare=False)
    on_success: Callable[[dict[str, Any]], None] | None = field(compare=False, default=None)
    on_failure: Callable[[], None] | None = field(compare=False, default=None)


class JobRunner:
    """A priority queue of jobs drained by an executor's workers (threads in this process by default;
    any `Executor` can stand in). Made once per process by the service container."""

    def __init__(self, repo: JobRepository, executor: Executor | None = None):
        self.repo = repo
        self.executor = executor or ThreadExecutor(max_workers=2)
        self._heap: list[_Queued] = []
        self._seq = itertools.count()
        self._guard = threading.Lock()
        self._cancel: dict[int, threading.Event] = {}
        self._waiting: set[int] = set()  # rows of chains made but not yet queued
        self._chains: dict[int, list[int]] = {}  # job id -> the ids of its chain

    def submit(
        self,
        kind: str,
        name: str,
        params: dict[str, Any],
        body: JobBody,
        priority: int = INTERACTIVE,
        on_success: Callable[[dict[str, Any]], None] | None = None,
    ) -> Job:
        """Queue `body` as a new job; returns its row (status queued)."""
        job = self.repo.create(kind, name, params)
        with self._guard:
            self._cancel[job.id] = threading.Event()
            heapq.heappush(self._heap, _Queued(priority, next(self._seq), job.id, body, on_success))
        # each submission adds one "run the best queued job" task; the heap decides which job that is
        self.executor.submit(self._run_next)
        return job

    def submit_chain(
        self, kind: str, items: list[tuple[str, dict[str, Any], JobBody]], priority: int = INTERACTIVE
    ) -> list[Job]:
        """Queue (name, params, body) jobs that run one after another. Every row is made now, so a
        caller can show the whole chain and cancel any part of it; each job is queued when the one
        before it succeeds, and a failure or a cancel fails the jobs after it ("skipped")."""
        rows = [self.repo.create(kind, name, params) for name, params, _ in items]
        ids = [r.id for r in rows]
        for prev, job_id in zip(ids, ids[1:]):
            self.repo.progress(job_id, 0, None, f"waiting for job {prev}")
        with self._guard:
            for job_id in ids:
                self._cancel[job_id] = threading.Event()
                self._chains[job_id] = ids
            self._waiting.update(ids[1:])

        def push(i: int) -> None:
            job_id = ids[i]
            with self._guard:
                if i > 0 and job_id not in self._waiting:
                    return  # cancelled while it waited
                self._waiting.discard(job_id)
                last = i + 1 == len(ids)
                heapq.heappush(
                    self._heap,
                    _Queued(
                        priority,
                        next(self._seq),
                        job_id,
                        items[i][2],
                        on_success=None if last else (lambda _: push(i + 1)),
                        on_failure=None if last else (lambda: self._skip(ids[i + 1 :], f"job {job_id} did not finish")),
                    ),
                )
            self.executor.submit(self._run_next)

        push(0)
        return self.repo.many(ids)

    def _skip(self, ids: list[int], reason: str) -> None:
        """Fail the waiting jobs among `ids` without running them."""
        with self._guard:
            skipped = [i for i in ids if i in self._waiting]
            for i in skipped:
                self._waiting.discard(i)
                self._cancel.pop(i, None)
                self._chains.pop(i, None)
        for i in skipped:
            self.repo.fail(i, f"not run: {reason}", message="skipped")

    def run(
        self,
        kind: str,
        name: str,
        params: dict[str, Any],
        body: JobBody,
        listeners: list[Progress] | None = None,
    ) -> dict[str, Any]:
        """Run a new job now in the caller's thread (the CLI; callers that wait for the result)."""
        job = self.repo.create(kind, name, params)
        with self._guard:
            cancel = self._cancel[job.id] = threading.Event()
        try:
            return run_job(self.repo, job.id, body, listeners, cancel)
        finally:
            with self._guard:
                self._cancel.pop(job.id, None)

    def cancel(self, job_id: int) -> bool:
        """Ask job `job_id` to stop. False when it is not queued or running in this process. The jobs
        of its chain after it are failed unrun; those before it go on."""
        with self._guard:
            event = self._cancel.get(job_id)
            if event is None:
                return False
            event.set()
            waiting = job_id in self._waiting
            if waiting:
                self._waiting.discard(job_id)
                self._cancel.pop(job_id, None)
            queued = next((q for q in self._heap if q.job_id == job_id), None)
            if queued is not None:
                self._heap.remove(queued)
                heapq.heapify(self._heap)
                self._cancel.pop(job_id, None)
            chain = self._chains.pop(job_id, [])
        if queued is not None or waiting:
            self.repo.fail(job_id, CANCELLED, message="cancelled")
            self._skip(chain[chain.index(job_id) + 1 :] if chain else [], f"job {job_id} was cancelled")
        return True

    def _run_next(self) -> None:
        with self._guard:
            if not self._heap:
                return  # its job was cancelled while queued
            item = heapq.heappop(self._heap)
            cancel = self._cancel[item.job_id]
        try:
            artifacts = run_job(self.repo, item.job_id, item.body, cancel=cancel)
        except Exception as exc:  # recorded on the job row; the worker lives on
            if isinstance(exc, JobCancelled):
                log.info("job %d cancelled", item.job_id)
            else:
                log.exception("job %d failed", item.job_id)
            if item.on_failure is not None:
                item.on_failure()
            return
        finally:
            with self._guard:
                self._cancel.pop(item.job_id, None)
                self._chains.pop(item.job_id, None)
        if item.on_success is not None:
            item.on_success(artifacts)

    def shutdown(self, wait: bool = False) -> None:
        with self._guard:
            for event in self._cancel.values():
                event.set()
        self.executor.shutdown(wait=wait)
