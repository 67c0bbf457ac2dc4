"""The fine-tune page in Chromium: a LoRA run of a tiny Llama on a dataset of conversations, its
loss curve, and the tuned model in the model list with its parent."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from tests.api.tiny_models import chatml_tokenizer, register, tiny_llama

pytestmark = pytest.mark.e2e


def test_a_lora_fine_tune_from_the_page(page, live_server, client, micro_workspace, tmp_path):
    tok = chatml_tokenizer(micro_workspace)
    register(client, tmp_path / "m", "e2e-ft-parent", tiny_llama(tok, seed=5, init=0.3), tok)
    rows = [
        {"messages": [{"role": "user", "content": f"Name lake {i}."}, {"role": "assistant", "content": "Lake Loupe."}]}
        for i in range(24)
    ]
    data = "\n".join(json.dumps(r) for r in rows).encode()
    r = client.post("/api/datasets", files={"file": ("lakes.jsonl", data)}, data={"id": "e2e-lakes"})
    assert r.status_code == 201, r.text

    page.goto(live_server + "/")
    page.get_by_test_id("nav-finetune").click()
    page.get_by_test_id("finetune-parent").select_option("e2e-ft-parent")
    page.get_by_test_id("finetune-dataset").select_option("e2e-lakes")
    page.get_by_test_id("finetune-steps").fill("12")
    page.get_by_test_id("finetune-lr").fill("0.02")
    page.get_by_test_id("finetune-model-id").fill("e2e-ft-child")
    page.get_by_test_id("finetune-start").click()

    run = page.get_by_test_id("finetune-run")
    expect(run).to_contain_text("e2e-ft-child", timeout=120_000)
    expect(page.get_by_test_id("finetune-run-status")).to_have_attribute("data-status", "done", timeout=120_000)
    expect(page.get_by_test_id("finetune-loss-plot").locator(".main-svg").first).to_be_visible(timeout=30_000)
    expect(page.get_by_test_id("finetune-run-summary")).to_contain_text("12 of 12 steps")
    expect(page.get_by_test_id("finetune-run-summary")).to_contain_text("registered")
    expect(page.get_by_test_id("finetune-row").filter(has_text="e2e-ft-child")).to_have_count(1)

    model = client.get("/api/models/e2e-ft-child").json()
    assert model["parent"] == "e2e-ft-parent" and model["lineage"]["dataset_id"] == "e2e-lakes"
    loss = client.get("/api/finetunes/e2e-ft-child").json()["loss"]
    assert len(loss) == 12 and loss[-1]["loss"] < loss[0]["loss"]
