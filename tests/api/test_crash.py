"""Nothing lost on a crash: the micro world's build, run in a child process and killed with SIGKILL
(loupe.faults' crash points) at step boundaries and inside the dashboards' commit, leaves a workspace
that reopens whole: no artifact half-present, the interrupted job failed "interrupted", the dashboards
"failed" (never served half-committed) until a retry or a rerun of the build finishes them.

Speed: each case starts from a copy of the session's built micro workspace and makes only the steps
it kills stale (their manifest's key, and the dashboards' committed key, set to an older value, as a
config change would), so a child rebuilds one step, not the world. Children are forked from a
forkserver that imported loupe and torch once (a fresh interpreter costs ~6 s of imports each)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from loupe.faults import ENV
from loupe.storage.artifacts import read_manifest, write_manifest

CTX = multiprocessing.get_context("forkserver")
CTX.set_forkserver_preload(["loupe.worlds", "loupe.jobs.executors", "tests.conftest"])
STALE = "before-the-crash"


def _build(workspace: str, crash_at: str) -> None:
    """The child: the micro world's build on `workspace`, killed at `crash_at`."""
    os.environ[ENV] = crash_at
    from loupe.jobs.executors import InlineExecutor
    from loupe.worlds import Build, open_world
    from tests.conftest import micro_settings

    world, c = open_world(micro_settings(Path(workspace)), executor=InlineExecutor())
    Build(world, c).run()


def killed_build(workspace: Path, crash_at: str) -> None:
    p = CTX.Process(target=_build, args=(str(workspace), crash_at))
    p.start()
    p.join(300)
    assert p.exitcode == -signal.SIGKILL, f"the build was not killed at {crash_at} (exit code {p.exitcode})"


@contextmanager
def opened(workspace: Path):
    """(world, build, container) of a workspace opened as a server would (scratch cleaned, orphaned
    jobs failed), jobs run in this thread."""
    from loupe.jobs.executors import InlineExecutor
    from loupe.worlds import Build, open_world
    from tests.conftest import micro_settings

    world, c = open_world(micro_settings(workspace), executor=InlineExecutor())
    try:
        yield world, Build(world, c), c
    finally:
        c.close()


def make_stale(build, c, step_name: str) -> None:
    """As if `step_name` had been built by an earlier configuration: its artifact is there, under an older
    key (and for dashboards, committed under it), so the next build rebuilds and replaces it."""
    step = next(s for s in build.steps if s.name == step_name)
    m = read_manifest(step.output)
    assert m is not None, step_name
    write_manifest(step.output, {**m, "key": STALE})
    if step.committed is not None:
        sae_id = m["sae_id"]
        c.ws.saes.merge_dashboards(sae_id, {"key": STALE})
    assert not step.is_complete()


def assert_whole(workspace: Path, build) -> None:
    """No scratch left behind, and every step's artifact either absent or whole (its manifest there)."""
    arts = workspace / "artifacts"
    scratch = [p for p in arts.rglob("*") if p.name.startswith((".tmp-", ".old-"))]
    assert scratch == [], scratch
    for s in build.steps:
        assert not s.output.exists() or read_manifest(s.output) is not None, f"{s.name}: half-present"


def assert_interrupted(c, job_name: str) -> None:
    job = c.ws.jobs.latest(job_name)
    assert job is not None, job_name
    assert job.status == "failed" and job.message == "interrupted", (job_name, job.status, job.message)
    assert job.error.startswith("interrupted")


@pytest.fixture
def seeded(micro_workspace, tmp_path):
    """A copy of the built micro workspace."""
    root = tmp_path / "ws"
    shutil.copytree(micro_workspace.settings.workspace, root)
    return root


# The boundaries that matter: where a step writes two stores that must agree (files and rows), and one
# step that writes only files. demo.corpus: files only (the foreground). steering.refusal: the vector's
# file, then its row. saes.train.resid1: the SAE's directory, then its row (its version). Inside the
# dashboards step: the files in place, the rows not committed (the window of issue 19). Left out: the
# model, evals and the Jacobian (the slowest steps, files + a job row like the corpus), and the cache.
KILLS = [
    ("step.end:demo.corpus", "demo.corpus"),
    ("step.end:steering.refusal", "steering.refusal"),
    ("step.end:saes.train.resid1", "saes.train.resid1"),
    ("dashboards.commit:demo-resid1", "saes.dashboards.resid1"),
]


def test_a_build_killed_at_each_boundary_reopens_whole_and_a_rerun_completes(seeded):
    for crash_at, step_name in KILLS:
        with opened(seeded) as (_, build, c):
            make_stale(build, c, step_name)
        t0 = time.monotonic()
        killed_build(seeded, crash_at)
        with opened(seeded) as (_, build, c):
            assert_interrupted(c, step_name)
            assert_whole(seeded, build)
            step = next(s for s in build.steps if s.name == step_name)
            pending = [s.name for s in build.pipeline.pending()]
            if crash_at.startswith("step.end:"):  # the body finished: its artifact is whole and counts
                assert step.is_complete() and pending == [], (crash_at, pending)
            else:  # killed before the commit: not done, however whole its files
                assert pending == [step_name], (crash_at, pending)
                sae = c.saes.record("demo-resid1")
                assert not c.saes.dashboards_ready(sae)
                assert c.saes.status(sae)["state"] == "failed"
        assert time.monotonic() - t0 < 120
    # a rerun finishes what the last kill left
    with opened(seeded) as (_, build, c):
        build.run()
        assert build.pipeline.pending() == []
        assert_whole(seeded, build)
        for sid in ("demo-mlp0", "demo-resid1"):
            assert c.saes.dashboards_ready(c.saes.record(sid))
        assert c.vectors.load("demo-refusal").r.norm() > 0


def test_dashboards_killed_before_their_commit_show_failed_and_a_retry_serves_them(seeded):
    """Issue 19's case: killed after the dashboard files are written and before the rows and key are
    committed, the SAE's feature pages answer 409 with its dashboards "failed" (not "built"); a retry
    rebuilds them and the pages are served."""
    from fastapi.testclient import TestClient

    from loupe.app import create_app
    from loupe.worlds import open_world
    from tests.conftest import micro_settings

    with opened(seeded) as (_, build, c):
        make_stale(build, c, "saes.dashboards.resid1")
    killed_build(seeded, "dashboards.commit:demo-resid1")

    _, c = open_world(micro_settings(seeded))  # a server's container: jobs on worker threads
    try:
        with TestClient(create_app(container=c, background=False)) as client:
            st = client.get("/api/saes/demo-resid1").json()["dashboards"]
            assert st["state"] == "failed" and "interrupted" in st["message"], st
            r = client.get("/api/saes/demo-resid1/features/0")
            assert r.status_code == 409, r.text
            r = client.post("/api/saes/demo-resid1/dashboards")
            assert r.status_code == 202, r.text
            assert [j["name"] for j in r.json()["jobs"]] == ["saes.dashboards.resid1"]
            deadline = time.monotonic() + 120
            while client.get("/api/saes/demo-resid1").json()["dashboards"]["state"] != "ready":
                assert time.monotonic() < deadline, "the retry did not finish"
                time.sleep(0.1)
            r = client.get("/api/saes/demo-resid1/features/0")
            assert r.status_code == 200 and r.json()["index"] == 0
    finally:
        c.close()
