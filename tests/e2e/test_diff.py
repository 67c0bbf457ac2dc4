"""The Diff page in Chromium: a copy of the micro model whose block-0 MLP output is shifted along one SAE
feature's decoder direction, compared with its parent (filled in from its lineage): the plots, that
feature at the top of the table, and its link to the feature page."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.api.tiny_models import register_feature_shifted_copy

pytestmark = pytest.mark.e2e


def test_a_diff_from_the_page(page, live_server, client, micro_container, tmp_path, tmp_path_factory):
    c = micro_container
    rec, j = register_feature_shifted_copy(client, c, tmp_path / "m", "e2e-diff-child")

    page.goto(live_server + "/")
    page.get_by_test_id("nav-diff").click()
    page.get_by_test_id("diff-model").select_option("e2e-diff-child")
    expect(page.get_by_test_id("diff-parent")).to_have_value(c.subject.model_id)  # from the lineage
    expect(page.get_by_test_id("diff-dataset")).to_have_value(c.subject.dataset.id)
    page.get_by_test_id("diff-sae").select_option(rec.id)
    page.get_by_test_id("diff-tokens").fill("512")
    page.get_by_test_id("diff-start").click()

    expect(page.get_by_test_id("diff-status")).to_have_attribute("data-status", "done", timeout=120_000)
    for plot in ("diff-weights-plot", "diff-activations-plot", "diff-refusal-plot"):
        expect(page.get_by_test_id(plot).locator(".main-svg").first).to_be_visible(timeout=30_000)
    expect(page.get_by_test_id("diff-top-param")).to_contain_text("gpt_neox.layers.0.mlp.dense_4h_to_h.bias")
    first = page.get_by_test_id("diff-feature-row").first
    expect(first).to_contain_text(f"#{j}")
    expect(page.get_by_test_id("diff-row").filter(has_text="e2e-diff-child")).to_have_count(1)
    page.screenshot(path=str(tmp_path_factory.mktemp("shots") / "diff.png"), full_page=True)

    first.get_by_role("link").click()
    expect(page).to_have_url(f"{live_server}/features/{rec.id}/{j}")
