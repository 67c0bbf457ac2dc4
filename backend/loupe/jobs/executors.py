"""Where batch work runs. Steps call `executor.submit(fn)` and never assume a place; the
in-process executors are the default, a Ray executor can stand in behind the same interface."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, TypeVar

T = TypeVar("T")


class Executor(Protocol):
    name: str

    def submit(self, fn: Callable[[], T]) -> Future[T]: ...

    def shutdown(self, wait: bool = True) -> None: ...


class InlineExecutor:
    """Runs the work now, in the caller's thread (the CLI build: progress bars stay in order)."""

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
    """Background work inside the server process, one job at a time (2 cores: parallel jobs
    would only fight over them)."""

    name = "thread"

    def __init__(self, max_workers: int = 1):
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="loupe-job")

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        return self._pool.submit(fn)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)


def make_executor(kind: str) -> Executor:
    if kind == "inline":
        return InlineExecutor()
    if kind == "thread":
        return ThreadExecutor()
    if kind == "ray":
        raise ValueError("the Ray executor needs the `cluster` extra and is not wired in yet")
    raise ValueError(f"unknown executor {kind!r}; choose inline or thread")
