"""The Datasets page (list, upload, samples, a malformed file's error) and the SAE training form on the
Features page, in Chromium against the live micro-world server."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

LINES = [f"Garden note {i}: the tomatoes ripen, the beans climb the fence, bees visit the squash." for i in range(30)]


def test_datasets_page_uploads_and_shows_samples(page, live_server, client, tmp_path):
    good = tmp_path / "garden.jsonl"
    good.write_text("\n".join(json.dumps({"text": t}) for t in LINES))
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": nope}\n')
    page.goto(live_server + "/")
    page.get_by_test_id("nav-datasets").click()
    expect(page).to_have_url(re.compile(r"/datasets$"))
    rows = page.get_by_test_id("dataset-row")
    expect(rows).to_have_count(len(client.get("/api/datasets").json()["datasets"]))
    expect(page.locator('[data-testid="dataset-row"][data-dataset-id="demo-corpus"]')).to_contain_text("built in")

    page.get_by_test_id("dataset-file").set_input_files(str(bad))
    expect(page.get_by_test_id("dataset-id")).to_have_value("broken")
    page.get_by_test_id("dataset-upload").click()
    expect(page.get_by_test_id("dataset-upload-error")).to_contain_text("line 2, column 10")

    page.get_by_test_id("dataset-file").set_input_files(str(good))
    page.get_by_test_id("dataset-id").fill("e2e-garden")
    page.get_by_test_id("dataset-name").fill("Garden notes")
    page.get_by_test_id("dataset-upload").click()
    row = page.locator('[data-testid="dataset-row"][data-dataset-id="e2e-garden"]')
    expect(row.get_by_test_id("dataset-documents")).to_have_text("30")
    expect(row).to_contain_text("Garden notes")
    detail = page.get_by_test_id("dataset-detail")
    expect(detail).to_contain_text("e2e-garden")
    expect(detail.get_by_test_id("dataset-sample")).to_have_count(5)
    expect(detail.get_by_test_id("dataset-sample").first).to_contain_text(LINES[0])
    assert client.get("/api/datasets/e2e-garden").json()["counts"]["documents"] == 30


def test_training_form_trains_an_sae_and_selects_it(page, live_server, client, tmp_path):
    if client.get("/api/datasets/e2e-garden").status_code == 404:  # run alone: register it here
        f = tmp_path / "garden.jsonl"
        f.write_text("\n".join(json.dumps({"text": t}) for t in LINES))
        client.app.state.container.datasets.add_file(f, "e2e-garden")
    page.goto(live_server + "/features")
    page.get_by_test_id("train-toggle").click()
    hooks = page.get_by_test_id("train-hook").locator("option")
    expect(hooks.first).to_be_attached()
    names = hooks.all_inner_texts()
    assert "blocks.1.hook_resid_pre" in names and all(re.search(r"resid|mlp|attn", h) for h in names)
    page.get_by_test_id("train-model").select_option("demo")
    page.get_by_test_id("train-hook").select_option("blocks.1.hook_resid_pre")
    page.get_by_test_id("train-dataset").select_option("e2e-garden")
    page.get_by_test_id("train-architecture").select_option("topk")
    page.get_by_test_id("train-expansion").fill("2")
    page.get_by_test_id("train-k").fill("4")
    page.get_by_test_id("train-tokens").fill("4096")
    page.get_by_test_id("train-name").fill("e2e-garden-sae")
    page.get_by_test_id("train-start").click()
    expect(page).to_have_url(re.compile(r"sae=e2e-garden-sae"), timeout=120_000)
    expect(page.locator('[data-testid="train-job"][data-status="done"]')).to_have_count(5)
    card = page.locator('[data-testid="sae-card"][data-sae-id="e2e-garden-sae"]')
    expect(card).to_have_attribute("aria-selected", "true")
    expect(card).to_contain_text("dashboards ready")
    expect(page.get_by_test_id("feature-row").first).to_be_visible()
    sae = client.get("/api/saes/e2e-garden-sae").json()
    assert sae["dataset_id"] == "e2e-garden" and sae["d_sae"] == 64

    # a bad request shows the server's reason
    page.get_by_test_id("train-name").fill("e2e-garden-sae")
    page.get_by_test_id("train-start").click()
    expect(page.get_by_test_id("train-error")).to_contain_text("already exists")


def test_failed_dashboards_offer_retry_and_delete(page, live_server):
    """An SAE whose dashboard chain failed shows the job's error with Retry and Delete (the API's
    answers are faked here; tests/api/test_sae_training.py runs the real failure and retry)."""
    calls: list[str] = []

    def failed(route):
        r = route.fetch()
        d = r.json()
        for s in d["saes"]:
            if s["id"] == "demo-resid1":
                s["dashboards"] = {
                    "state": "failed",
                    "job_id": 7,
                    "job_name": "tokens.x.demo-64",
                    "message": "tokens.x.demo-64: RuntimeError: the documents are missing",
                }
        route.fulfill(response=r, body=json.dumps(d))

    def record(route):
        calls.append(f"{route.request.method} {route.request.url.split('/api')[1]}")
        route.fulfill(
            status=204 if route.request.method == "DELETE" else 202,
            body="" if route.request.method == "DELETE" else "{}",
        )

    page.route(re.compile(r".*/api/saes(\?.*)?$"), failed)  # the list, of the current model
    page.route("**/api/saes/demo-resid1/dashboards", record)
    page.route(re.compile(r".*/api/saes/demo-resid1$"), record)
    page.goto(live_server + "/features?sae=demo-resid1")
    expect(page.get_by_test_id("dashboards-error")).to_contain_text("the documents are missing")
    expect(page.locator('[data-testid="sae-card"][data-sae-id="demo-resid1"]')).to_contain_text("dashboards failed")
    page.get_by_test_id("dashboards-retry").click()
    page.get_by_test_id("sae-delete").click()
    expect(page).to_have_url(re.compile(r"/features$"))
    assert calls == ["POST /saes/demo-resid1/dashboards", "DELETE /saes/demo-resid1"]
    page.unroute_all(behavior="ignoreErrors")  # the page polls on; no faked answer outlives the test
