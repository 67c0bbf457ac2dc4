"""The one job runner: priorities, progress rows, cancellation of queued and running jobs, chains of
build steps that stop at the first failure, and no artifact from a cancelled step."""

from __future__ import annotations

import threading
import time

import pytest

from loupe.jobs.executors import ThreadExecutor
from loupe.jobs.pipeline import Pipeline, Step
from loupe.jobs.runner import BUILD, INTERACTIVE, JobCancelled, JobContext, JobRunner
from loupe.storage.artifacts import atomic_dir, write_manifest
from loupe.storage.db import Database
from loupe.storage.repositories import JobRepository


@pytest.fixture()
def repo(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    db.migrate()
    yield JobRepository(db)
    db.dispose()


def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_one_worker_runs_interactive_jobs_before_queued_build_jobs(repo):
    runner = JobRunner(repo, ThreadExecutor(max_workers=1))
    gate, order = threading.Event(), []
    runner.submit("t", "blocker", {}, lambda ctx: gate.wait(10) and None)
    for name, prio in (("build-1", BUILD), ("build-2", BUILD), ("user", INTERACTIVE)):
        runner.submit("t", name, {}, lambda ctx, n=name: order.append(n) or {"name": n}, priority=prio)
    gate.set()
    _wait(lambda: len(order) == 3)
    assert order == ["user", "build-1", "build-2"]  # priority first, then FIFO
    _wait(lambda: all(j.status == "done" for j in repo.list()))
    assert repo.latest("user").artifacts == {"name": "user"}
    runner.shutdown(wait=True)


def test_cancel_a_queued_job_marks_it_failed_and_it_never_runs(repo):
    runner = JobRunner(repo, ThreadExecutor(max_workers=1))
    gate, ran = threading.Event(), []
    runner.submit("t", "blocker", {}, lambda ctx: gate.wait(10) and None)
    job = runner.submit("t", "victim", {}, lambda ctx: ran.append(1))
    assert runner.cancel(job.id)
    row = repo.get(job.id)
    assert row.status == "failed" and row.message == "cancelled" and "cancelled" in row.error
    gate.set()
    _wait(lambda: repo.get(1).status == "done")
    time.sleep(0.1)
    assert ran == [] and not runner.cancel(job.id)  # gone from the queue: nothing left to cancel
    runner.shutdown(wait=True)


def test_cancel_a_running_step_stops_it_at_its_next_progress_and_leaves_no_artifact(repo, tmp_path):
    runner = JobRunner(repo, ThreadExecutor(max_workers=1))
    out = tmp_path / "artifact"
    started = threading.Event()

    def body(ctx: JobContext) -> dict:
        with atomic_dir(out) as tmp:
            (tmp / "part").write_text("half")
            started.set()
            for i in range(1000):
                ctx.progress(i, 1000, "working")
                time.sleep(0.01)
            write_manifest(tmp, {"key": "k"})
        return {}

    job = runner.submit("t", "long", {}, body)
    assert started.wait(10)
    assert runner.cancel(job.id)
    _wait(lambda: repo.get(job.id).status == "failed")
    assert repo.get(job.id).message == "cancelled"
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))
    runner.shutdown(wait=True)


def test_the_world_chain_shows_every_pending_step_queued_skips_finished_ones_and_stops_at_a_failure(repo, tmp_path):
    runner = JobRunner(repo, ThreadExecutor(max_workers=2), max_queued=1)
    ran: list[str] = []
    gate = threading.Event()

    def step(name: str, fail: bool = False) -> Step:
        def body(ctx: JobContext) -> dict:
            gate.wait(10)
            ran.append(name)
            if fail:
                raise RuntimeError(f"{name} broke")
            with atomic_dir(tmp_path / name) as tmp:
                write_manifest(tmp, {"key": name})
            return {}

        return Step(name, name, tmp_path / name, body, background=True, key=name)

    (tmp_path / "a").mkdir()
    write_manifest(tmp_path / "a", {"key": "a"})  # already built
    steps = [step("a"), step("b"), step("c", fail=True), step("d")]
    Pipeline(runner, steps).submit(steps)  # beyond max_queued: the world's own build is never refused
    # every pending step has its row before the first runs (what the Jobs page and index statuses show)
    assert repo.latest("a") is None and repo.latest("b").status in ("queued", "running")
    assert [repo.latest(n).status for n in "cd"] == ["queued"] * 2
    assert repo.latest("d").message == f"waiting for job {repo.latest('c').id}"
    gate.set()
    _wait(lambda: repo.latest("d").status == "failed")
    assert ran == ["b", "c"]  # a was built; d never ran after c failed
    assert "c broke" in repo.latest("c").error and repo.latest("d").message == "skipped"
    runner.shutdown(wait=True)


def test_run_in_this_thread_raises_the_cancellation(repo):
    runner = JobRunner(repo, ThreadExecutor(max_workers=1))

    def body(ctx: JobContext) -> dict:
        runner.cancel(ctx.job_id)
        ctx.progress(1, 2, "next batch")
        return {}

    with pytest.raises(JobCancelled):
        runner.run("t", "self-cancelling", {}, body)
    assert repo.latest("self-cancelling").status == "failed"
    runner.shutdown(wait=True)


def test_a_chain_makes_every_row_at_once_and_stops_at_a_failure_or_a_cancel(repo):
    runner = JobRunner(repo, ThreadExecutor(max_workers=2))
    started, gate, ran = threading.Event(), threading.Event(), []

    def slow(ctx):
        started.set()
        while not gate.wait(0.01):
            ctx.progress(0, 1, "working")  # where a cancel is noticed
        ran.append("slow")

    def boom(ctx):
        raise RuntimeError("step two broke")

    a, b, c = runner.submit_chain(
        "t", [("a", {}, slow), ("b", {}, boom), ("c", {}, lambda ctx: ran.append("c") or None)], priority=INTERACTIVE
    )
    assert [j.status for j in (b, c)] == ["queued"] * 2 and c.message == f"waiting for job {b.id}"
    gate.set()
    _wait(lambda: repo.get(c.id).status == "failed")
    assert repo.get(a.id).status == "done" and "step two broke" in repo.get(b.id).error
    assert repo.get(c.id).message == "skipped" and f"job {b.id} did not finish" in repo.get(c.id).error
    assert ran == ["slow"]

    # cancelling the running job fails it and the rest of its chain, unrun
    started.clear()
    gate.clear()
    x, y = runner.submit_chain("t", [("x", {}, slow), ("y", {}, lambda ctx: ran.append("y") or None)])
    assert started.wait(10)
    assert runner.cancel(x.id)
    _wait(lambda: repo.get(y.id).status == "failed")
    assert repo.get(x.id).message == "cancelled" and repo.get(y.id).message == "skipped"
    assert ran == ["slow"] and not runner.cancel(y.id)
    runner.shutdown(wait=True)


def test_the_queue_is_bounded_and_identical_requests_join_the_active_job(repo):
    from loupe.errors import TooManyRequests

    runner = JobRunner(repo, ThreadExecutor(max_workers=1), max_queued=2)
    gate = threading.Event()
    runner.submit("t", "blocker", {}, lambda ctx: gate.wait(10) and None)
    _wait(lambda: repo.get(1).status == "running")  # running jobs do not count: they left the queue
    a = runner.submit("t", "a", {"x": 1}, lambda ctx: {"ran": "a"}, dedupe="key-a")
    again = runner.submit("t", "a", {"x": 1}, lambda ctx: {"ran": "twice"}, dedupe="key-a")
    assert again.id == a.id and runner.queued() == 1  # joined, not queued twice
    runner.submit("t", "b", {}, lambda ctx: None)
    with pytest.raises(TooManyRequests) as e:
        runner.submit("t", "c", {}, lambda ctx: None)
    assert e.value.status_code == 429 and e.value.headers == {"Retry-After": str(runner.RETRY_AFTER)}
    with pytest.raises(TooManyRequests):
        runner.submit_chain("t", [("d", {}, lambda ctx: None)])
    assert runner.submit("t", "a", {}, lambda ctx: None, dedupe="key-a").id == a.id  # a join is never refused
    build = runner.submit("t", "world", {}, lambda ctx: None, priority=BUILD, bounded=False)  # the build's own
    assert [j.name for j in repo.list()][::-1] == ["blocker", "a", "b", "world"]
    gate.set()
    _wait(lambda: all(j.status == "done" for j in repo.list()))
    assert repo.get(a.id).artifacts == {"ran": "a"} and repo.get(build.id).status == "done"
    # once it finished, the same request makes a new job
    b = runner.submit("t", "a", {"x": 1}, lambda ctx: None, dedupe="key-a")
    assert b.id != a.id
    _wait(lambda: repo.get(b.id).status == "done")
    runner.shutdown(wait=True)


def test_an_identical_chain_joins_and_a_cancelled_one_frees_its_key(repo):
    runner = JobRunner(repo, ThreadExecutor(max_workers=1), max_queued=8)
    gate = threading.Event()
    runner.submit("t", "blocker", {}, lambda ctx: gate.wait(10) and None)
    items = [(n, {}, lambda ctx: None) for n in ("one", "two")]
    first = runner.submit_chain("t", items, dedupe="chain")
    assert [j.id for j in runner.submit_chain("t", items, dedupe="chain")] == [j.id for j in first]
    assert [j.id for j in runner.active("chain")] == [j.id for j in first]
    assert runner.cancel(first[0].id)  # cancels the chain: the key is free again
    assert runner.active("chain") is None
    second = runner.submit_chain("t", items, dedupe="chain")
    assert {j.id for j in second}.isdisjoint(j.id for j in first)
    gate.set()
    _wait(lambda: all(repo.get(j.id).status == "done" for j in second))
    assert runner.active("chain") is None
    runner.shutdown(wait=True)


def test_units_in_process_run_in_order_with_one_worker_and_stop_at_a_cancel():
    """LocalFanout: one worker made for all the units, results in unit order, the job's check between
    units; the unit helpers cover the range in aligned blocks."""
    from loupe.jobs.fanout import LocalFanout, Units, blocks, local_map, unit_size

    made = []

    def factory():
        made.append(1)
        return lambda u: u * 10

    assert list(LocalFanout().map(factory, [3, 1, 2])) == [30, 10, 20] and made == [1]
    assert list(LocalFanout().map(factory, [])) == [] and made == [1]  # no units: no worker loaded
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("cancelled")

    out = []
    with pytest.raises(RuntimeError):
        for r in LocalFanout().map(factory, list(range(10)), check):
            out.append(r)
    assert out == [0, 10]
    assert blocks(10, 4, 3) == [(0, 6), (6, 10)]  # 4 rounded up to whole batches of 3
    assert blocks(0, 4) == []
    assert unit_size(1000, 2, align=32) == 128  # ~4 units per worker, whole batches
    assert Units(local_map).size(1000, 32) == 32  # in-process: one batch a unit
    assert Units(local_map, 2, True).size(1000, 32) == 128
