"""The bounded job queue over HTTP: past LOUPE_MAX_QUEUED_JOBS waiting jobs, an endpoint that starts a
job answers 429 with Retry-After; an identical request joins the job already queued or running (its id
back) instead of queuing a second; DELETE /api/jobs/{id} takes a queued one off. Runs on a copy of the
micro workspace whose two job workers are held busy."""

from __future__ import annotations

import shutil
import threading

import pytest


@pytest.fixture()
def busy(micro_workspace, tmp_path):
    """(client, container) on a copy of the micro workspace, at most 2 jobs queued, both workers held by
    blockers until the test ends."""
    from fastapi.testclient import TestClient

    from loupe.app import create_app
    from loupe.worlds import open_world
    from tests.conftest import micro_settings

    root = tmp_path / "ws"
    shutil.copytree(micro_workspace.settings.workspace, root)
    _, c = open_world(micro_settings(root, max_queued_jobs=2))
    gate = threading.Event()
    blockers = [c.jobs.submit("test", f"blocker-{i}", {}, lambda ctx: gate.wait(60) and None) for i in range(2)]
    try:
        with TestClient(create_app(container=c, background=False)) as client:
            while any(client.get(f"/api/jobs/{b.id}").json()["status"] != "running" for b in blockers):
                pass
            yield client, c
    finally:
        gate.set()
        c.close()


def evaluate(client, alpha: float):
    body = {"vector_id": "demo-refusal", "methods": ["addition"], "alphas": [alpha], "limit": 2}
    return client.post("/api/steering/evaluate", json=body)


def test_a_full_queue_answers_429_and_identical_requests_join(busy):
    client, c = busy
    n_jobs = len(client.get("/api/jobs").json()["jobs"])  # the build's and the two blockers
    first = evaluate(client, 1.0)
    assert first.status_code == 202, first.text
    job_id = first.json()["job_id"]
    again = evaluate(client, 1.0)
    assert again.status_code == 202 and again.json()["job_id"] == job_id  # joined, not queued twice
    assert evaluate(client, 2.0).status_code == 202  # another request: queued (2 waiting now)
    full = evaluate(client, 3.0)
    assert full.status_code == 429, full.text
    assert int(full.headers["Retry-After"]) > 0 and "LOUPE_MAX_QUEUED_JOBS" in full.json()["detail"]
    assert evaluate(client, 1.0).json()["job_id"] == job_id  # a join is answered even when the queue is full
    # every job-starting endpoint is bounded, and a refused one leaves nothing behind
    r = client.post("/api/jacobian/runs", json={"width": 2, "epochs": 1, "seed": 11, "experiments": False})
    assert r.status_code == 429, r.text
    train = {"model_id": "demo", "hook_name": "blocks.1.hook_resid_pre", "dataset_id": "demo-corpus", "name": "refused"}
    r = client.post("/api/saes/train", json=train)
    assert r.status_code == 429, r.text
    assert client.get("/api/saes/refused").status_code == 404
    assert len(client.get("/api/jobs").json()["jobs"]) == n_jobs + 2  # the two evaluations, nothing else
    # cancelling a queued job makes room
    assert client.delete(f"/api/jobs/{job_id}").status_code == 202
    assert client.get(f"/api/jobs/{job_id}").json()["status"] == "failed"
    r = evaluate(client, 3.0)
    assert r.status_code == 202 and r.json()["job_id"] != job_id
