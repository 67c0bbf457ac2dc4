"""The sidebar's model picker in Chromium: every page works on the model chosen there, and a reload keeps it."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

OTHER = "gpt2-picker"


@pytest.fixture(scope="module")
def other_model(client, micro_workspace, tmp_path_factory):
    """A second registered model: a tiny random GPT-2 in the micro world's tokens (no SAEs, vectors or influence)."""
    from tests.api.tiny_models import tiny_gpt2

    path = tmp_path_factory.mktemp("picker") / OTHER
    tiny_gpt2(micro_workspace, path, n_positions=64, n_layer=2)
    client.app.state.container.models.register(OTHER, str(path), "hf-dir")
    return OTHER


def test_pages_follow_the_model_picked_in_the_sidebar(page, live_server, client, other_model, tmp_path_factory):
    default = client.get("/api/models").json()["default_id"]
    assert default and default != other_model
    page.goto(live_server + "/generate")
    picker = page.get_by_test_id("global-model-select")
    expect(picker).to_have_value(default)
    expect(page.get_by_test_id("model-select")).to_have_count(0)  # Generate has no picker of its own

    picker.select_option(other_model)
    expect(page.get_by_test_id("generate-model")).to_have_text(other_model)
    page.get_by_test_id("prompt-input").fill("User: hi\nAssistant:")
    page.get_by_test_id("max-tokens-input").fill("4")
    with page.expect_request(lambda r: r.url.endswith("/api/generate")) as req:
        page.get_by_test_id("generate-button").click()
    assert req.value.post_data_json["model_id"] == other_model
    expect(page.get_by_test_id("generate-meta")).to_contain_text(f"model {other_model}")

    page.reload()  # the choice survives a reload
    expect(picker).to_have_value(other_model)

    # Features: the SAE list of that model, which has none
    with page.expect_request(lambda r: f"/api/saes?model_id={other_model}" in r.url):
        page.get_by_test_id("nav-features").click()
    expect(page.get_by_test_id("features-empty")).to_contain_text(f"No SAEs are trained for model {other_model}")
    expect(page.get_by_test_id("sae-card")).to_have_count(0)
    page.get_by_test_id("train-toggle").click()
    expect(page.get_by_test_id("train-model")).to_have_value(other_model)

    # Steer: that model's vectors, and its next-token request
    with page.expect_request(lambda r: f"/api/vectors?model_id={other_model}" in r.url):
        page.get_by_test_id("nav-steer").click()

    # Jacobian: the layer tool asks about that model
    page.get_by_test_id("nav-jacobian").click()
    with page.expect_response(lambda r: r.url.endswith("/api/jacobian/layer")) as resp:
        page.get_by_test_id("jacobian-layer-run").click()
    assert resp.value.request.post_data_json["model_id"] == other_model
    assert resp.value.json()["model_id"] == other_model
    expect(page.get_by_test_id("jacobian-layer-result")).to_be_visible()

    # Influence: built only for the world's model, and the page says so
    page.get_by_test_id("nav-influence").click()
    status = page.get_by_test_id("influence-status")
    expect(status).to_contain_text(f"Influence is not built for model {other_model}")
    expect(status).to_contain_text(f"influence is not built for model '{other_model}'")
    page.screenshot(path=str(tmp_path_factory.mktemp("shots") / "picker-influence.png"), full_page=True)

    # back to the default model: its SAEs are listed again
    picker.select_option(default)
    page.get_by_test_id("nav-features").click()
    expect(page.get_by_test_id("sae-card").first).to_be_visible()
    expect(page.get_by_test_id("features-empty")).to_have_count(0)
