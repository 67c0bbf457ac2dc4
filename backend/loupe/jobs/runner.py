"""The one job runner: every piece of background work in Loupe is a job row run here.

A job is a body `fn(ctx) -> artifacts` with a row in the `jobs` table (queued -> running -> done |
failed, progress and errors kept). `JobRunner.submit` queues it by priority (lower runs first, FIFO
within a priority) for the executor's workers; `run_job` runs one in the caller's thread (the CLI's
foreground build, `wait=True` callers). Cancellation is cooperative: `cancel` marks a queued job
failed at once and asks a running one to stop, which its body notices at its next `ctx.progress`
(or `ctx.check_cancelled()`); its artifacts are written atomically, so a stopped job leaves none.

The queue is bounded: a submission that would add to `max_queued` waiting jobs raises TooManyRequests
(429 with Retry-After); one with the `dedupe` key of a job (or chain) still queued or running joins
it (gets its rows) instead of queuing a second. The world's own build (`bounded=False`) is never
refused."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from loupe.core.config import Progress
from loupe.errors import TooManyRequests
from loupe.jobs.executors import Executor, ThreadExecutor
from loupe.jobs.fanout import Fanout, LocalFanout, Units
from loupe.storage.models import Job
from loupe.storage.repositories import JobRepository

log = logging.getLogger("loupe.jobs")

JobBody = Callable[["JobContext"], dict[str, Any] | None]

# Priorities: what a person asked for now runs before the world's background build.
INTERACTIVE = 0
BUILD = 10

CANCELLED = "cancelled by request"

U = TypeVar("U")
R = TypeVar("R")


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
    fanout: Fanout = field(default_factory=LocalFanout)
    _last: float = 0.0

    def check_cancelled(self) -> None:
        if self.cancel.is_set():
            raise JobCancelled(CANCELLED)

    def map_units(self, factory: Callable[[], Callable[[U], R]], units: Sequence[U]) -> Iterator[R]:
        """Each unit's result in unit order, computed where the runner's fan-out puts it (this thread,
        or Ray actors: loupe.jobs.fanout); a cancel stops the units still running."""
        return self.fanout.map(factory, units, self.check_cancelled)

    def units(self) -> Units:
        """`map_units` with the fan-out's width, for bodies that size their units by it."""
        if not self.fanout.distributed:
            return Units(self.map_units)
        return Units(self.map_units, self.fanout.workers, True)

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
    fanout: Fanout | None = None,
) -> dict[str, Any]:
    """Run `body` as job `job_id` in this thread: running -> done (with its artifacts) or failed."""
    repo.mark_running(job_id)
    ctx = JobContext(
        job_id=job_id,
        repo=repo,
        listeners=list(listeners or []),
        cancel=cancel or threading.Event(),
        fanout=fanout or LocalFanout(),
    )
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

    RETRY_AFTER = 10  # seconds a refused client is told to wait (a job step takes seconds to minutes)

    def __init__(
        self,
        repo: JobRepository,
        executor: Executor | None = None,
        max_queued: int | None = None,
        fanout: Fanout | None = None,
    ):
        self.repo = repo
        self.executor = executor or ThreadExecutor(max_workers=2)
        self.fanout = fanout or LocalFanout()  # where a job's parallel units run (JobContext.map_units)
        self.max_queued = max_queued
        self._heap: list[_Queued] = []
        self._seq = itertools.count()
        self._guard = threading.Lock()
        self._admission = threading.Lock()  # a check of the bound and keys, and the rows it admits, at once
        self._cancel: dict[int, threading.Event] = {}  # every queued, waiting or running job of this runner
        self._waiting: set[int] = set()  # rows of chains made but not yet queued
        self._chains: dict[int, list[int]] = {}  # job id -> the ids of its chain
        self._keys: dict[str, list[int]] = {}  # dedupe key -> its job ids, while any of them is active
        self._key_of: dict[int, str] = {}

    def queued(self) -> int:
        """How many jobs wait (queued, or made for a chain and not yet queued)."""
        with self._guard:
            return len(self._heap) + len(self._waiting)

    def check_room(self) -> None:
        """Raise TooManyRequests now if a bounded submission would be refused (callers that make rows
        before they submit check first)."""
        self._check_bound(True)

    def active(self, dedupe: str) -> list[Job] | None:
        """The rows of the active job or chain with this dedupe key, if any."""
        ids = self._joined(dedupe)
        return None if ids is None else self.repo.many(ids)

    def _joined(self, dedupe: str | None) -> list[int] | None:
        """The ids of the active job or chain with this key, if any."""
        with self._guard:
            return list(self._keys[dedupe]) if dedupe is not None and dedupe in self._keys else None

    def _check_bound(self, bounded: bool) -> None:
        if not bounded or self.max_queued is None:
            return
        waiting = self.queued()
        if waiting >= self.max_queued:
            raise TooManyRequests(
                f"{waiting} jobs are waiting, the most this server queues (LOUPE_MAX_QUEUED_JOBS="
                f"{self.max_queued}); try again when some have run, or cancel one (DELETE /api/jobs/{{id}})",
                self.RETRY_AFTER,
            )

    def _remember(self, dedupe: str | None, ids: list[int]) -> None:
        if dedupe is None:
            return
        with self._guard:
            self._keys[dedupe] = ids
            for i in ids:
                self._key_of[i] = dedupe

    def _release(self, job_id: int) -> None:
        """Forget a finished job's key once no job of its chain is active (call with the guard held)."""
        key = self._key_of.pop(job_id, None)
        if key is not None and not any(i in self._cancel for i in self._keys.get(key, [])):
            self._keys.pop(key, None)

    def submit(
        self,
        kind: str,
        name: str,
        params: dict[str, Any],
        body: JobBody,
        priority: int = INTERACTIVE,
        on_success: Callable[[dict[str, Any]], None] | None = None,
        dedupe: str | None = None,
        bounded: bool = True,
    ) -> Job:
        """Queue `body` as a new job; returns its row (status queued), or the row of the active job
        with the same `dedupe` key. Raises TooManyRequests when the queue is full (`bounded`)."""
        with self._admission:
            joined = self._joined(dedupe)
            if joined is not None:
                job = self.repo.get(joined[0])
                if job is not None:
                    return job
            self._check_bound(bounded)
            job = self.repo.create(kind, name, params)
            with self._guard:
                self._cancel[job.id] = threading.Event()
                heapq.heappush(self._heap, _Queued(priority, next(self._seq), job.id, body, on_success))
            self._remember(dedupe, [job.id])
        # each submission adds one "run the best queued job" task; the heap decides which job that is
        self.executor.submit(self._run_next)
        return job

    def submit_chain(
        self,
        kind: str,
        items: list[tuple[str, dict[str, Any], JobBody]],
        priority: int = INTERACTIVE,
        dedupe: str | None = None,
        bounded: bool = True,
    ) -> list[Job]:
        """Queue (name, params, body) jobs that run one after another. Every row is made now, so a
        caller can show the whole chain and cancel any part of it; each job is queued when the one
        before it succeeds, and a failure or a cancel fails the jobs after it ("skipped"). With the
        `dedupe` key of an active chain, returns that chain's rows instead."""
        with self._admission:
            joined = self._joined(dedupe)
            if joined is not None:
                return self.repo.many(joined)
            self._check_bound(bounded)
            rows = [self.repo.create(kind, name, params) for name, params, _ in items]
            ids = [r.id for r in rows]
            for prev, job_id in zip(ids, ids[1:]):
                self.repo.progress(job_id, 0, None, f"waiting for job {prev}")
            with self._guard:
                for job_id in ids:
                    self._cancel[job_id] = threading.Event()
                    self._chains[job_id] = ids
                self._waiting.update(ids[1:])
            self._remember(dedupe, ids)

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
                self._release(i)
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
            return run_job(self.repo, job.id, body, listeners, cancel, self.fanout)
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
            if queued is not None or waiting:
                self._release(job_id)
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
            artifacts = run_job(self.repo, item.job_id, item.body, cancel=cancel, fanout=self.fanout)
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
                self._release(item.job_id)
        if item.on_success is not None:
            item.on_success(artifacts)

    def shutdown(self, wait: bool = False) -> None:
        with self._guard:
            for event in self._cancel.values():
                event.set()
        self.executor.shutdown(wait=wait)
