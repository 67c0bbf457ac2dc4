"""The model's lock: reentrant, granted in arrival order, and a thread that releases and asks again
at once (a decoding loop) cannot keep a waiting thread out."""

from __future__ import annotations

import threading
import time

import pytest

from loupe.services.models.fairlock import FairRLock


def _wait_for(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_reentrant_and_only_the_owner_releases():
    lock = FairRLock()
    with lock:
        with lock:
            assert lock._count == 2
        other = []
        t = threading.Thread(target=lambda: other.append(lock.acquire(timeout=0.05)))
        t.start()
        t.join()
        assert other == [False] and not lock._waiters  # a timed-out waiter leaves the queue
    with pytest.raises(RuntimeError):
        lock.release()


def test_waiters_get_the_lock_in_arrival_order():
    lock = FairRLock()
    order: list[int] = []
    lock.acquire()
    threads = []
    for i in range(5):

        def take(i=i):
            with lock:
                order.append(i)

        t = threading.Thread(target=take)
        t.start()
        _wait_for(lambda n=i + 1: len(lock._waiters) == n)  # queued in this order
        threads.append(t)
    lock.release()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3, 4]


def test_a_tight_acquire_release_loop_does_not_starve_a_waiter():
    lock = FairRLock()
    me = threading.get_ident()
    stop, overtakes = threading.Event(), []

    def loop():  # one forward pass after another
        while not stop.is_set():
            with lock:
                # a pass that began while the main thread was already queued overtook it
                overtakes.append(any(ident == me for ident, _ in lock._waiters))
                time.sleep(0.001)

    t = threading.Thread(target=loop)
    t.start()
    _wait_for(lambda: len(overtakes) > 5)
    with lock:
        n = sum(overtakes)
    stop.set()
    t.join(5)
    assert n <= 1, n  # at most the pass that was running when it queued
