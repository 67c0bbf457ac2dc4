"""A reentrant lock granted in arrival order, for the model: one forward pass at a time, taken per
pass, so a request waits behind at most the passes that arrived before it.

`threading.RLock` is not fair: a thread that releases it and asks again at once (a decoding loop, one
acquire per token) usually gets it back before a waiting thread wakes, so a flood of generate requests
could keep a waiting request (activations on text, next-token, a live edit) out for as long as the
flood lasts. Here a release hands the lock to the longest waiter directly."""

from __future__ import annotations

import threading
from collections import deque
from types import TracebackType


class FairRLock:
    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._owner: int | None = None
        self._count = 0
        self._waiters: deque[tuple[int, threading.Event]] = deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                self._count += 1
                return True
            if self._owner is None and not self._waiters:
                self._owner, self._count = me, 1
                return True
            if not blocking:
                return False
            turn = threading.Event()
            self._waiters.append((me, turn))
        turn.wait(None if timeout < 0 else timeout)
        with self._mutex:
            if self._owner == me:  # handed over (perhaps just as the wait timed out)
                return True
            self._waiters.remove((me, turn))
            return False

    def release(self) -> None:
        with self._mutex:
            if self._owner != threading.get_ident():
                raise RuntimeError("cannot release a lock held by another thread")
            self._count -= 1
            if self._count:
                return
            if self._waiters:
                self._owner, turn = self._waiters.popleft()
                self._count = 1
                turn.set()
            else:
                self._owner = None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
