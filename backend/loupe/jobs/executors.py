"""Where the job runner's work runs. The runner calls `executor.submit(fn)` and never assumes a
place: in the caller's thread, in worker threads of this process, or (later) on a cluster."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Executor(Protocol):
    name: str

    def submit(self, fn: Callable[[], T]) -> Future[T]: ...

    def shutdown(self, wait: bool = True) -> None: ...


class InlineExecutor:
    """Runs the work now, in the caller's thread (tests that want a job finished when submit returns)."""

    name = "inline"

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        fut: Future[T] = Future()
        try:
            fut.set_result(fn())
        except BaseException as exc:  # the job runner records it; the future carries it
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True) -> None:
        return None


class ThreadExecutor:
    """Worker threads inside the server process. Two by default on 2 cores: the world's build runs
    one step at a time, so a person's job never waits for a long build step to finish. The threads
    are daemons (concurrent.futures' are joined at exit): stopping the server never waits for a job,
    and a job killed mid-way leaves no artifact, since artifacts are renamed into place whole."""

    name = "thread"

    def __init__(self, max_workers: int = 2):
        self._tasks: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"loupe-job-{i}", daemon=True) for i in range(max_workers)
        ]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            fut, fn = task
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # the job runner records it; the future carries it
                fut.set_exception(exc)

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        fut: Future[T] = Future()
        self._tasks.put((fut, fn))
        return fut

    def shutdown(self, wait: bool = True) -> None:
        for _ in self._threads:
            self._tasks.put(None)
        if wait:
            for t in self._threads:
                t.join()
