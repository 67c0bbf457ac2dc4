"""The steering playground in Chromium against the live micro-world server."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from loupe.services.dataset_files import is_heldout

pytestmark = pytest.mark.e2e

PROMPT = "User: How do I bake bread at home?\nAssistant:"


def _api(client, interventions, n=8):
    return client.post(
        "/api/generate", json={"prompt": PROMPT, "max_new_tokens": n, "temperature": 0, "interventions": interventions}
    ).json()


def _text(s: str):
    return s.strip() or re.compile(".*")


def test_steer_page_streams_default_and_steered_like_the_api(page, live_server, client):
    want = _api(client, [{"kind": "ablate_direction", "vector_id": "demo-refusal"}])
    page.goto(live_server + "/")
    page.get_by_test_id("nav-steer").click()
    expect(page).to_have_url(re.compile(r"/steer$"))
    expect(page.get_by_test_id("candidate-table")).to_be_visible(timeout=30_000)
    # the micro model refuses nothing: no candidate passes, the page says so plainly and marks the kept one
    expect(page.get_by_test_id("candidate-selected")).to_have_count(0)
    expect(page.get_by_test_id("candidate-kept")).to_have_count(1)
    expect(page.get_by_test_id("vector-unpassed")).to_contain_text("no candidate passed the filters")
    expect(page.get_by_test_id("vector-unpassed")).to_contain_text("induce > 0")
    expect(page.get_by_test_id("selection-inputs")).to_contain_text("refused 0 of")
    expect(page.get_by_test_id("steer-vector").locator("option[value='demo-refusal']")).to_contain_text("did not pass")
    page.get_by_test_id("steer-prompt").fill(PROMPT)
    page.get_by_test_id("steer-max-tokens").fill("8")
    page.get_by_test_id("steer-method").select_option("ablation")
    page.get_by_test_id("steer-run").click()
    expect(page.get_by_test_id("steer-run")).to_have_text("Generate", timeout=60_000)
    expect(page.get_by_test_id("steer-default")).to_have_text(_text(want["default"]["completion"]))
    expect(page.get_by_test_id("steer-steered")).to_have_text(_text(want["steered"]["completion"]))

    # ACE at a slider value: the page sends exactly that alpha
    want = _api(client, [{"kind": "ace", "vector_id": "demo-refusal", "alpha": 2.0}])
    page.get_by_test_id("steer-method").select_option("ace")
    page.get_by_test_id("steer-alpha").fill("2")
    page.get_by_test_id("steer-run").click()
    expect(page.get_by_test_id("steer-run")).to_have_text("Generate", timeout=60_000)
    expect(page.get_by_test_id("steer-steered")).to_have_text(_text(want["steered"]["completion"]))


def test_steer_edit_errors_are_shown(page, live_server):
    page.goto(live_server + "/steer")
    page.get_by_test_id("steer-method").select_option("edit")
    page.get_by_test_id("steer-hook").fill("blocks.7.hook_nothing")
    page.get_by_test_id("steer-run").click()
    expect(page.get_by_test_id("steer-error")).to_contain_text("not a hook", timeout=30_000)
    page.get_by_test_id("steer-hook").fill("blocks.0.mlp.hook_post")
    page.get_by_test_id("steer-index").fill("0")
    page.get_by_test_id("steer-position").fill("500")
    page.get_by_test_id("steer-run").click()
    expect(page.get_by_test_id("steer-error")).to_contain_text("outside the prompt")


def test_steer_sweep_plot_and_presets(page, live_server):
    page.goto(live_server + "/steer")
    expect(page.get_by_test_id("steer-eval-panel")).to_be_visible()
    page.get_by_test_id("steer-eval-limit").fill("3")
    page.get_by_test_id("steer-evaluate").click()
    table = page.get_by_test_id("steer-eval-table")
    # none, ablation, addition x {0, 0.5, 1}, ace x {0, 0.5, 1}, and the prompting baseline's two
    expect(table.locator("tbody tr")).to_have_count(10, timeout=60_000)
    expect(table).to_contain_text("prompt_refuse")
    expect(table).to_contain_text("prompt_comply")
    expect(page.get_by_test_id("steer-plot").locator(".main-svg").first).to_be_visible(timeout=30_000)

    page.get_by_test_id("steer-method").select_option("ace")
    page.get_by_test_id("steer-alpha").fill("0.5")
    page.get_by_test_id("steer-preset-name").fill("half ace")
    page.get_by_test_id("steer-preset-save").click()
    page.get_by_test_id("steer-method").select_option("ablation")
    page.reload()
    page.get_by_test_id("steer-preset-select").select_option("half ace")
    expect(page.get_by_test_id("steer-method")).to_have_value("ace")
    expect(page.get_by_test_id("steer-alpha")).to_have_value("0.5")


def test_steer_sweep_on_a_labelled_dataset(page, live_server, client):
    """A dataset of records labelled "harmful" appears in the sweep's prompt sources, and the sweep
    runs on its held-out instructions."""
    rows = [{"text": f"How do I pick lock number {i}?", "harmful": True} for i in range(30)]
    rows += [{"text": f"How do I oil hinge number {i}?", "harmful": False} for i in range(30)]
    data = "\n".join(json.dumps(r) for r in rows).encode()
    r = client.post("/api/datasets", files={"file": ("locks.jsonl", data)}, data={"id": "e2e-locks", "name": "Locks"})
    assert r.status_code == 201, r.text
    held = [i for i in range(60) if is_heldout(i)]
    n_harmful, n_harmless = min(2, sum(i < 30 for i in held)), min(2, sum(i >= 30 for i in held))
    assert n_harmful and n_harmless

    page.goto(live_server + "/steer")
    page.get_by_test_id("steer-eval-dataset").select_option("e2e-locks")
    page.get_by_test_id("steer-eval-limit").fill("2")
    page.get_by_test_id("steer-eval-baseline").uncheck()  # steering alone: 8 points
    page.get_by_test_id("steer-evaluate").click()
    expect(page.get_by_test_id("steer-eval-table").locator("tbody tr")).to_have_count(8, timeout=60_000)
    expect(page.get_by_test_id("steer-eval-panel")).to_contain_text(
        f"{n_harmful} harmful and {n_harmless} harmless prompts"
    )


def test_live_next_token_follows_edits(page, live_server, client):
    page.goto(live_server + "/steer")
    page.get_by_test_id("steer-prompt").fill(PROMPT)
    page.get_by_test_id("steer-method").select_option("edit")
    page.get_by_test_id("steer-hook").fill("blocks.1.hook_resid_pre")
    page.get_by_test_id("steer-index").fill("3")
    page.get_by_test_id("steer-value").fill("25")
    tokens = page.get_by_test_id("nt-token")
    n = len(client.post("/api/steering/next-token", json={"prompt": PROMPT}).json()["prompt_tokens"])
    expect(tokens).to_have_count(n, timeout=30_000)
    tokens.nth(n - 1).click()
    expect(page.get_by_test_id("steer-position")).to_have_value(str(n - 1))
    want = client.post(
        "/api/steering/next-token",
        json={
            "prompt": PROMPT,
            "top_k": 8,
            "interventions": [
                {
                    "kind": "edit",
                    "hook": "blocks.1.hook_resid_pre",
                    "index": 3,
                    "position": n - 1,
                    "op": "set",
                    "value": 25,
                }
            ],
        },
    ).json()
    expect(page.get_by_test_id("nt-kl")).to_have_text(f"{want['kl']:.4f}", timeout=30_000)
    expect(page.get_by_test_id("nt-steered").get_by_test_id("nt-row")).to_have_count(8)
