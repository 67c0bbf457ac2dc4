"""The Jacobian page in Chromium: start a tiny training-Jacobian run, see its spectrum, a bad setting's
error, and a layer Jacobian of the micro model."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e


def test_jacobian_page_runs_spectrum_errors_and_layer_tool(page, live_server, client, tmp_path_factory):
    page.goto(live_server + "/")
    page.get_by_test_id("nav-jacobian").click()
    expect(page).to_have_url(re.compile(r"/jacobian$"))
    # a bad setting: the server's reason is shown
    page.get_by_test_id("jacobian-width").fill("500")
    page.get_by_test_id("jacobian-start").click()
    expect(page.get_by_test_id("jacobian-start-error")).to_contain_text("parameters")
    # a tiny run: 64 -> 2 -> 10 (160 parameters), one epoch (25 steps), no experiments
    page.get_by_test_id("jacobian-width").fill("2")
    page.get_by_test_id("jacobian-epochs").fill("1")
    page.get_by_test_id("jacobian-seed").fill("3")
    page.get_by_test_id("jacobian-experiments").uncheck()
    page.get_by_test_id("jacobian-start").click()
    expect(page.get_by_test_id("jacobian-start-error")).to_have_count(0)
    row = page.locator('[data-testid="jacobian-run-row"]', has_text="seed 3 · width 2")
    expect(row).to_have_attribute("data-status", "done", timeout=240_000)
    row.click()
    run_id = row.get_attribute("data-run-id")
    expected = client.get(f"/api/jacobian/runs/{run_id}").json()
    expect(page.get_by_test_id("jacobian-sigma1")).to_have_text(f"{expected['singular_values'][0]:.2f}")
    expect(page.get_by_test_id("jacobian-region-bulk")).to_contain_text(f"{expected['regions']['bulk']['count']:,}")
    expect(page.get_by_test_id("jacobian-spectrum")).to_have_attribute("data-drawn", "true", timeout=30_000)
    expect(page.get_by_test_id("jacobian-alignment")).to_have_attribute("data-drawn", "true", timeout=30_000)
    # the layer Jacobian of the language model at the last token
    page.get_by_test_id("jacobian-layer-run").click()
    result = page.get_by_test_id("jacobian-layer-result")
    expect(result).to_contain_text("32×32", timeout=60_000)
    expect(page.get_by_test_id("jacobian-layer-directions").locator("tbody tr")).to_have_count(5)
    page.screenshot(path=str(tmp_path_factory.mktemp("shots") / "jacobian.png"), full_page=True)
    page.get_by_test_id("jacobian-layer-hook-in").fill("blocks.7.nope")
    page.get_by_test_id("jacobian-layer-run").click()
    expect(page.get_by_test_id("jacobian-layer-error")).to_contain_text("unknown hook")
