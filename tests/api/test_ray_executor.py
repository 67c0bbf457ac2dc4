"""LOUPE_EXECUTOR=ray: the micro world's fanned-out steps built on a local Ray (2 actors, an 80 MB
object store) give the same artifacts as the in-process default; an actor killed mid-job is restarted
and its units retried, with the same bytes; a driver killed mid-job leaves no half artifact and a
rerun finishes it, the same again; a cancel stops units that are running on the actors.

Speed: one Ray for the module (started once, ~10 s; its actors import torch once, ~15-30 s on 2 busy
cores); each case starts from a copy of the session's micro workspace and rebuilds only the steps
that fan out."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from loupe.faults import ENV
from loupe.jobs.executors import InlineExecutor, ThreadExecutor
from loupe.jobs.pipeline import Pipeline

ray = pytest.importorskip("ray", reason="LOUPE_EXECUTOR=ray needs ray: make install installs it (the cluster extra)")

# the steps that fan out (by job name prefix): rebuilt on Ray and their artifacts compared with the default's
FANNED_OUT_STEPS = ("saes.cache.", "saes.dashboards.", "jacobian.", "influence.gradients")
# manifest and results fields that are wall-clock times, not results
TIMES = {"seconds", "pages_seconds", "finished_at"}


@pytest.fixture(scope="module")
def fanout():
    from loupe.jobs.ray_fanout import RayFanout

    # 4 logical CPUs on 2 cores: room for a second driver's 2 actors beside this pool's (the killed-driver case)
    f = RayFanout("", workers=2, object_store_mb=80, cpus=4)
    yield f
    f.shutdown()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def reference(micro_workspace, tmp_path_factory):
    """A copy of the session's micro workspace with its influence built too (factors and the 2-bit
    gradient cache), all in this thread: the default executor's artifacts."""
    from loupe.worlds import open_world
    from tests.conftest import micro_settings

    root = tmp_path_factory.mktemp("ray-ref") / "ws"
    shutil.copytree(micro_workspace.settings.workspace, root)
    _, c = open_world(micro_settings(root), executor=InlineExecutor())
    try:
        steps = c.influence_pipeline().steps()
        Pipeline(c.jobs, steps).run(steps)
    finally:
        c.close()
    return root


def fanned_out(root: Path) -> list[str]:
    """The artifact directories (relative to the workspace) of the micro world's fanned-out steps: its
    caches, dashboards, Jacobian run and gradient cache (not those other tests add to the workspace)."""
    from loupe.worlds import Build, open_world
    from tests.conftest import micro_settings

    world, c = open_world(micro_settings(root), executor=InlineExecutor())
    try:
        steps = Build(world, c).steps + c.influence_pipeline().steps()
        return [str(s.output.relative_to(root)) for s in steps if s.name.startswith(FANNED_OUT_STEPS)]
    finally:
        c.close()


def _fresh_copy(reference: Path, dest: Path) -> Path:
    """`reference` without the fanned-out steps' artifacts (so a build makes them again)."""
    shutil.copytree(reference, dest)
    for d in fanned_out(dest):
        shutil.rmtree(dest / d)
    return dest


def _without_times(x):
    if isinstance(x, dict):
        return {k: _without_times(v) for k, v in x.items() if k not in TIMES}
    if isinstance(x, list):
        return [_without_times(v) for v in x]
    return x


def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_artifacts(a: Path, b: Path, dirs: list[str] | None = None) -> int:
    """Every file of `dirs` (default: the fanned-out steps') byte for byte (JSON files: equal once
    their wall-clock fields are dropped); returns how many files were compared."""
    n = 0
    for d in fanned_out(b) if dirs is None else dirs:
        fa, fb = _files(a / d), _files(b / d)
        assert sorted(fa) == sorted(fb), d
        for rel, p in fa.items():
            if p.suffix == ".json":
                assert _without_times(json.loads(p.read_text())) == _without_times(json.loads(fb[rel].read_text())), (
                    d,
                    rel,
                )
            else:
                assert p.read_bytes() == fb[rel].read_bytes(), (d, rel)
            n += 1
    return n


def _feature_rows(c, sae_id: str) -> list[dict]:
    total, page = c.ws.saes.features(sae_id, limit=100_000)
    cols = ("index", "density", "max_activation", "mean_activation", "capacity", "auto_label", "top_domain")
    return [{**{k: getattr(f, k) for k in cols}, "summary": f.summary} for f, _, _ in page]


def _build(root: Path, fanout, listener_for=None):
    """The micro world's build and its influence steps on `root`, units on `fanout`; (container, jobs)."""
    from loupe.worlds import Build, open_world
    from tests.conftest import micro_settings

    world, c = open_world(micro_settings(root, executor="ray"), executor=InlineExecutor(), fanout=fanout)
    build = Build(world, c)
    steps = build.steps + c.influence_pipeline().steps()
    Pipeline(c.jobs, steps).run(steps, listener_for=listener_for)
    return c


def test_the_micro_world_on_ray_gives_the_same_artifacts(reference, fanout, tmp_path):
    from loupe.worlds import open_world
    from tests.conftest import micro_settings

    t0 = time.monotonic()
    root = _fresh_copy(reference, tmp_path / "ray")
    c = _build(root, fanout)
    # the fan-out took the work: the pool's actors are separate processes, and they ran
    pids = ray.get([a.pid.remote() for a in fanout.actors()])
    assert len(set(pids)) == 2 and os.getpid() not in pids
    try:
        n = assert_same_artifacts(reference, root)
        assert n >= 12, n  # cache shards and manifests, dashboard arrays and pages, gradient shards, the spectrum
        # the rows the dashboards commit, and the jobs' progress as /api/jobs shows it
        ref_c = open_world(micro_settings(reference), executor=InlineExecutor())[1]
        try:
            for sid in ("demo-mlp0", "demo-resid1"):
                assert _feature_rows(c, sid) == _feature_rows(ref_c, sid), sid
                assert c.saes.dashboards_ready(c.saes.record(sid))
        finally:
            ref_c.close()
        jobs = {j.name: j for j in c.ws.jobs.list(limit=100)}
        for name in ("saes.cache.blocks.0.mlp.hook_post", "saes.dashboards.mlp0", "influence.gradients"):
            j = jobs[name]
            assert j.status == "done" and j.progress_total and j.progress_done == j.progress_total, name
    finally:
        c.close()
    print(f"ray build of the fanned-out steps: {time.monotonic() - t0:.1f}s")


def test_a_steering_sweep_on_ray_equals_the_in_process_one(micro_workspace, fanout, tmp_path):
    """Per (method, alpha, prompt batch) units: the same batches as one pass, so the same completions
    and logits; the KL is compared within 1e-12 (float64 means of the same numbers: measured equal)."""
    from loupe.worlds import open_world
    from tests.conftest import micro_settings

    root = tmp_path / "ws"
    shutil.copytree(micro_workspace.settings.workspace, root)
    args = {"methods": ["none", "ablation", "addition", "ace"], "alphas": [0.0, 1.0], "limit": 8, "wait": True}
    results = []
    for f in (None, fanout):
        settings = micro_settings(root, executor="thread" if f is None else "ray")
        _, c = open_world(settings, executor=InlineExecutor(), fanout=f)
        try:
            svc = c.steering
            results.append(svc.evaluation(svc.evaluate("demo-refusal", **args)["eval_id"]))
        finally:
            c.close()
    local, remote = results
    assert len(remote["rows"]) == len(local["rows"]) == 6
    for a, b in zip(local["rows"], remote["rows"]):
        assert abs(a.pop("kl_harmless") - b.pop("kl_harmless")) <= 1e-12
        assert a == b  # methods, alphas, refusal rates, gaps, example completions
    assert local["figure"] == remote["figure"]


def test_an_actor_killed_mid_job_is_restarted_and_the_result_is_the_same(reference, fanout, tmp_path):
    """ray.kill (restart allowed) on an actor while a job's units are in flight: Ray restarts it and
    retries the units it held; the 2-bit gradient cache and the activation cache come out identical."""
    root = _fresh_copy(reference, tmp_path / "killed")
    actors = fanout.actors()
    before = ray.get([a.pid.remote() for a in actors])
    killed: list[str] = []

    def listener_for(step):
        def on_progress(done, total, message):
            # the first unit of a fanned-out step is back: the others are still in flight
            if not killed and step.name == "influence.gradients" and total and 0 < done < total:
                ray.kill(actors[1], no_restart=False)
                killed.append(step.name)

        return on_progress

    c = _build(root, fanout, listener_for)
    c.close()
    assert killed == ["influence.gradients"]
    after = ray.get([a.pid.remote() for a in actors])
    assert after[0] == before[0] and after[1] != before[1]  # the killed one is a new process
    assert_same_artifacts(reference, root)


def _ray_build(workspace: str, address: str, crash_at: str) -> None:
    """The child: the micro world's build with LOUPE_EXECUTOR=ray joining `address`, killed at `crash_at`."""
    os.environ[ENV] = crash_at
    from loupe.worlds import Build, open_world
    from tests.conftest import micro_settings

    settings = micro_settings(Path(workspace), executor="ray", ray_address=address, ray_workers=2)
    world, c = open_world(settings, executor=InlineExecutor())
    Build(world, c).run()


def test_a_driver_killed_mid_job_leaves_nothing_half_and_a_rerun_gives_the_same(reference, fanout, tmp_path):
    """The driver (the build's process) is killed with SIGKILL after two of a cache step's units came
    back from the actors: the workspace reopens with the step interrupted, no scratch left, the
    finished steps still finished; a rerun rebuilds that step alone, byte for byte the default's."""
    from loupe.worlds import Build, open_world
    from tests.conftest import micro_settings

    root = tmp_path / "ws"
    shutil.copytree(reference, root)
    hook = "blocks.1.hook_resid_pre"
    shutil.rmtree(root / "artifacts" / "activations" / "demo" / hook)
    address = ray.get_runtime_context().gcs_address  # the child joins this module's Ray
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=_ray_build, args=(str(root), address, "units.2"))
    p.start()
    p.join(240)
    assert p.exitcode == -signal.SIGKILL, f"the build was not killed mid-job (exit code {p.exitcode})"

    world, c = open_world(micro_settings(root, executor="ray"), executor=InlineExecutor(), fanout=fanout)
    try:
        build = Build(world, c)
        job = c.ws.jobs.latest(f"saes.cache.{hook}")
        assert job.status == "failed" and job.message == "interrupted", (job.status, job.message)
        assert not [q for q in (root / "artifacts").rglob("*") if q.name.startswith((".tmp-", ".old-"))]
        assert [s.name for s in build.pipeline.pending()] == [f"saes.cache.{hook}"]
        build.run()
        assert build.pipeline.pending() == []
    finally:
        c.close()
    assert_same_artifacts(reference, root, dirs=[f"artifacts/activations/demo/{hook}"])


class _SlowUnits:
    """A unit that marks its start, sleeps, and marks its end (never reached when cancelled)."""

    def __init__(self, marks: str):
        self.marks = Path(marks)

    def __call__(self):
        return self.run

    def run(self, i: int) -> int:
        (self.marks / f"start-{i}-{os.getpid()}").touch()
        time.sleep(30)
        (self.marks / f"end-{i}").touch()
        return i


def test_a_cancel_reaches_units_running_on_the_actors(fanout, tmp_path):
    from loupe.jobs.runner import JobRunner
    from loupe.services.workspace import Workspace
    from tests.api.conftest import wait_until
    from tests.conftest import micro_settings

    ws = Workspace.open(micro_settings(tmp_path / "ws"))
    runner = JobRunner(ws.jobs, ThreadExecutor(1), fanout=fanout)
    marks = tmp_path / "marks"
    marks.mkdir()
    seen: list[int] = []

    def body(ctx):
        for r in ctx.map_units(_SlowUnits(str(marks)), list(range(6))):
            seen.append(r)
        return {}

    try:
        job = runner.submit("test", "slow units", {}, body)
        started = wait_until(lambda: len(list(marks.glob("start-*"))) >= 2 and list(marks.glob("start-*")), 120)
        pids = {int(m.name.split("-")[2]) for m in started}
        assert runner.cancel(job.id)
        t0 = time.monotonic()
        wait_until(lambda: ws.jobs.get(job.id).status == "failed", 10)
        assert time.monotonic() - t0 < 5  # within a poll of the units, not after their 30 s
        assert ws.jobs.get(job.id).message == "cancelled"

        def gone(pid: int) -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False

        wait_until(lambda: all(gone(pid) for pid in pids), 15)  # the running units' processes were stopped
        assert seen == [] and not list(marks.glob("end-*"))
        # the fan-out makes a new pool for the next job
        assert len(fanout.actors()) == 2 and ray.get([a.pid.remote() for a in fanout.actors()])
    finally:
        runner.shutdown()  # the runner's threads; the module's Ray stays up
        ws.close()


def test_the_settings_choose_the_executor(tmp_path):
    from loupe.jobs.fanout import LocalFanout, make_fanout
    from loupe.jobs.ray_fanout import RayFanout
    from tests.conftest import micro_settings

    s = micro_settings(tmp_path, executor="ray", ray_address="auto", ray_workers=3)
    f = make_fanout(s.executor, s.ray_address, s.ray_workers, s.ray_object_store_mb)
    assert isinstance(f, RayFanout) and f.address == "auto" and f.workers == 3
    assert isinstance(make_fanout("thread"), LocalFanout)
    with pytest.raises(ValueError):
        make_fanout("dask")


class _Double:
    def __call__(self):
        return lambda i: 2 * i


def test_a_cancel_leaves_another_jobs_units_alone(fanout, tmp_path):
    """Two jobs on one pool take it in turns: cancelling the one on the actors (which kills them) does
    not fail the one waiting; it gets a new pool and finishes."""
    from loupe.jobs.runner import JobRunner
    from loupe.services.workspace import Workspace
    from tests.api.conftest import wait_until
    from tests.conftest import micro_settings

    ws = Workspace.open(micro_settings(tmp_path / "ws"))
    runner = JobRunner(ws.jobs, ThreadExecutor(2), fanout=fanout)
    marks = tmp_path / "marks"
    marks.mkdir()
    try:
        slow = runner.submit("test", "slow", {}, lambda ctx: {"r": list(ctx.map_units(_SlowUnits(str(marks)), [0, 1]))})
        wait_until(lambda: list(marks.glob("start-*")), 120)
        quick = runner.submit("test", "quick", {}, lambda ctx: {"r": list(ctx.map_units(_Double(), list(range(7))))})
        time.sleep(1)
        assert ws.jobs.get(quick.id).status == "running"  # waiting for the pool
        assert runner.cancel(slow.id)
        done = wait_until(lambda: (j := ws.jobs.get(quick.id)).status in ("done", "failed") and j, 120)
        assert done.status == "done", done.error
        assert done.artifacts == {"r": [0, 2, 4, 6, 8, 10, 12]}
        assert ws.jobs.get(slow.id).status == "failed" and not list(marks.glob("end-*"))
    finally:
        runner.shutdown()
        ws.close()
