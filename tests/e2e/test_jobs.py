"""The jobs table in Chromium: a running job has a cancel button; pressing it stops the job (failed,
"cancelled") and the button goes away."""

from __future__ import annotations

import threading
import time

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e


def test_cancel_a_running_job_from_the_jobs_table(page, live_server, client):
    runner = client.app.state.container.jobs
    started, stopped, give_up = threading.Event(), threading.Event(), threading.Event()

    def body(ctx):
        started.set()
        try:
            while not give_up.is_set():  # a long job that reports progress (where a cancel lands)
                ctx.progress(time.monotonic() % 1, 1, "working")
                time.sleep(0.05)
        finally:
            stopped.set()

    # the session's runner runs jobs in the submitting thread: submit from a thread of our own
    t = threading.Thread(target=lambda: runner.submit("test", "e2e.long", {}, body), daemon=True)
    t.start()
    assert started.wait(30)
    job = next(j for j in client.get("/api/jobs").json()["jobs"] if j["name"] == "e2e.long")
    try:
        assert job["status"] == "running"
        page.goto(live_server + "/")
        row = page.locator(f'[data-testid="job-row"][data-job-id="{job["id"]}"]')
        expect(row).to_have_attribute("data-status", "running", timeout=20_000)
        row.get_by_test_id("job-cancel").click()
        expect(row).to_have_attribute("data-status", "failed", timeout=20_000)
        expect(row.get_by_test_id("job-cancel")).to_have_count(0)
        assert stopped.wait(10)
        got = client.get(f"/api/jobs/{job['id']}").json()
        assert got["status"] == "failed" and got["progress"]["message"] == "cancelled"
        # a finished job has no cancel button, and DELETE says why
        assert client.delete(f"/api/jobs/{job['id']}").status_code == 409
    finally:
        give_up.set()
        t.join(10)
        _forget(client, job["id"])


def _forget(client, job_id: int) -> None:
    """Take the test's job row out of the shared session workspace (the overview's test expects every
    job there to have finished well)."""
    from loupe.storage.models import Job

    with client.app.state.container.ws.db.session() as s:
        s.delete(s.get(Job, job_id))
