"""Both pages in Chromium against the live micro-world server."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e


def test_overview_shows_model_jobs_and_eval(page, live_server, client, tmp_path_factory):
    page.goto(live_server + "/")
    card = page.get_by_test_id("model-card")
    expect(card).to_contain_text("demo")
    expect(page.get_by_test_id("model-n_layers")).to_contain_text("2")
    expect(page.get_by_test_id("database-kind")).to_contain_text("sqlite")
    rows = page.get_by_test_id("job-row")
    expect(rows.first).to_be_visible()
    n_jobs = len(client.get("/api/jobs").json()["jobs"])
    expect(rows).to_have_count(n_jobs)
    expect(page.get_by_test_id("jobs-table")).to_contain_text("demo.model")
    expect(page.locator('[data-testid="job-row"][data-status="done"]')).to_have_count(n_jobs)
    expect(page.get_by_test_id("eval-table")).to_be_visible()
    expect(page.get_by_test_id("eval-target-row")).to_have_count(4)
    page.screenshot(path=str(tmp_path_factory.mktemp("shots") / "overview.png"), full_page=True)


def test_generate_playground_matches_the_api(page, live_server, client):
    prompt = "User: How do I bake bread at home?\nAssistant:"
    expected = client.post("/api/generate", json={"prompt": prompt, "max_new_tokens": 10, "temperature": 0}).json()
    page.goto(live_server + "/")
    page.get_by_test_id("nav-generate").click()
    expect(page).to_have_url(re.compile(r"/generate$"))
    page.get_by_test_id("prompt-input").fill(prompt)
    page.get_by_test_id("max-tokens-input").fill("10")
    page.get_by_test_id("temperature-input").fill("0")
    page.get_by_test_id("generate-button").click()
    expect(page.get_by_test_id("completion")).to_have_text(
        expected["default"]["completion"].strip() or re.compile(".*"), use_inner_text=True
    )
    page.get_by_test_id("toggle-tokens").click()
    expect(page.get_by_test_id("token-chip")).to_have_count(len(expected["default"]["tokens"]))


def test_generate_shows_the_servers_error(page, live_server):
    page.goto(live_server + "/generate")
    page.get_by_test_id("prompt-input").fill("User: " + "tell me a long story " * 80)
    page.get_by_test_id("generate-button").click()
    expect(page.get_by_test_id("error-box")).to_contain_text("context")
    page.get_by_test_id("prompt-input").fill("User: hi\nAssistant:")
    page.get_by_test_id("max-tokens-input").fill("100000")
    page.keyboard.press("Control+Enter")
    expect(page.get_by_test_id("error-box")).to_contain_text("max_new_tokens")
