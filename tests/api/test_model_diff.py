"""Model diffing on the micro world's model against copies with planted changes: a random change of one
block's weights is found in that block's weights and in the residual stream from that block on only; a
shift of the residual stream along one SAE feature's decoder direction makes that feature the most
changed; the refusal directions agree before the changed block and not after; the API's answers, bounds
and errors."""

from __future__ import annotations

import math

import pytest
import torch

from tests.api.tiny_models import register_edited_copy, register_feature_shifted_copy

LAYER = 1
PARAM = f"gpt_neox.layers.{LAYER}.attention.dense.weight"


@pytest.fixture(scope="module")
def perturbed(client, micro_container, tmp_path_factory):
    """A copy whose block-1 attention output matrix has a random change of 10% of its norm."""
    c = micro_container
    g = torch.Generator().manual_seed(0)
    delta = {}

    def edit(model):
        w = dict(model.named_parameters())[PARAM]
        d = torch.randn(w.shape, generator=g)
        delta["d"] = d * (0.1 * w.norm() / d.norm())
        w += delta["d"]

    before = register_edited_copy(c, tmp_path_factory.mktemp("diff") / "m", "diff-perturbed", edit)
    return before, delta["d"]


def _diff(client, **body):
    r = client.post("/api/diffs", json=body)
    assert r.status_code == 202, r.text
    started = r.json()
    out = client.get(f"/api/diffs/{started['diff_id']}").json()
    assert out["status"] == "done", out["error"]
    return started, out


def test_a_change_of_one_block_is_found_in_that_block(client, micro_container, perturbed):
    c = micro_container
    before, delta = perturbed
    started, out = _diff(client, model_id="diff-perturbed", dataset_id=c.subject.dataset.id, n_tokens=512)
    res = out["result"]
    assert res["parent_id"] == c.subject.model_id  # from the lineage

    # weights: exactly the planted relative norm, in block 1 only
    w = res["weights"]
    top = w["params"][0]
    assert top["name"] == PARAM and top["relative"] == pytest.approx(0.1, rel=1e-5)
    assert all(p["relative"] == 0 for p in w["params"][1:])
    layer_norm = math.sqrt(sum(float(v.double().norm()) ** 2 for k, v in before.items() if f"layers.{LAYER}." in k))
    assert w["layers"][LAYER]["relative"] == pytest.approx(float(delta.double().norm()) / layer_norm, rel=1e-4)
    assert w["layers"][LAYER]["top_param"] == PARAM
    assert w["layers"][0]["relative"] == 0 and w["outside"]["relative"] == 0

    # activations: the residual stream after block 0 is the parent's, after block 1 it is not
    a = {x["layer"]: x for x in res["activations"]["layers"]}
    assert a[0]["relative_l2"] == 0 and a[0]["cosine"] == pytest.approx(1.0, abs=1e-9)
    assert a[1]["relative_l2"] > 1e-3 and a[1]["cosine"] < 1 - 1e-6
    assert res["activations"]["n_tokens"] >= 512

    # the parent's default SAE reads block 0's MLP, before the change: no feature moved
    f = res["features"]
    assert f["sae_id"] is not None and f["skipped"] is None and f["hook_name"].startswith("blocks.0.")
    assert f["n_changed"] == 0 and f["top"]["delta_mean"] == []

    # refusal directions (the micro dataset labels harmful instructions): the same up to block 1's input
    ref = res["refusal"]
    assert ref["skipped"] is None and ref["n_harmful"] > 0
    by_layer = {r["layer"]: r for r in ref["layers"]}
    # block 0's input is the token embedding: at the post-instruction tokens (the same tokens after every
    # instruction) harmful and harmless means are equal, the direction is zero and has no cosine
    assert by_layer[0]["cosine"] == [None] * len(ref["positions"]) and max(by_layer[0]["norm_parent"]) == 0
    assert all(x == pytest.approx(1.0, abs=1e-9) for x in by_layer[1]["cosine"])
    assert min(by_layer[2]["cosine"]) < 1 - 1e-6

    figs = out["figures"]
    assert figs["weights"]["data"][0]["y"][LAYER] > 0 and figs["refusal"] is not None
    # the same request again reads the finished diff
    again = client.post(
        "/api/diffs", json={"model_id": "diff-perturbed", "dataset_id": c.subject.dataset.id, "n_tokens": 512}
    )
    assert again.json() == {"diff_id": started["diff_id"], "job_id": None, "status": "done"}
    listed = client.get("/api/diffs").json()["diffs"]
    assert any(d["diff_id"] == started["diff_id"] and d["status"] == "done" for d in listed)


def test_a_shift_along_a_feature_makes_it_the_most_changed(client, micro_container, tmp_path):
    """Block 0's MLP output bias moved along the decoder direction of one feature of the SAE on
    blocks.1.hook_resid_pre: that feature's mean activation rises most."""
    c = micro_container
    rec, j = register_feature_shifted_copy(client, c, tmp_path / "m", "diff-feature")
    _, out = _diff(client, model_id="diff-feature", dataset_id=c.subject.dataset.id, sae_id=rec.id, n_tokens=512)
    f = out["result"]["features"]
    assert f["sae_id"] == rec.id and f["n_changed"] > 0
    top = f["top"]["delta_mean"]
    assert top[0]["index"] == j and top[0]["delta_mean"] > 0, [(t["index"], t["delta_mean"]) for t in top[:5]]
    assert top[0]["label"]  # the automatic label of the dashboards
    w = out["result"]["weights"]
    assert w["layers"][0]["relative"] > 0 and w["layers"][1]["relative"] == 0


def test_bad_requests_are_4xx(client, micro_container, perturbed):
    ds = micro_container.subject.dataset.id
    parent = micro_container.subject.model_id
    base = {"model_id": "diff-perturbed", "dataset_id": ds}
    assert client.post("/api/diffs", json={**base, "model_id": "nope"}).status_code == 404
    assert client.post("/api/diffs", json={**base, "dataset_id": "nope"}).status_code == 404
    assert client.post("/api/diffs", json={**base, "parent_id": "nope"}).status_code == 404
    assert client.post("/api/diffs", json={**base, "sae_id": "nope"}).status_code == 404
    r = client.post("/api/diffs", json={**base, "model_id": parent})  # the world's model records no parent
    assert r.status_code == 422 and "no parent" in r.json()["detail"]
    r = client.post("/api/diffs", json={**base, "parent_id": "diff-perturbed"})
    assert r.status_code == 422 and "itself" in r.json()["detail"]
    assert client.post("/api/diffs", json={**base, "n_tokens": 10**9}).status_code == 422
    assert client.post("/api/diffs", json={**base, "split": "test"}).status_code == 422
    assert client.get("/api/diffs/nope").status_code == 404


def test_a_lora_fine_tune_of_one_matrix_is_found_there(client, micro_workspace, tmp_path):
    """A real fine-tune (LoRA on block 1's down_proj of a tiny Llama with a chat template), diffed on its
    conversations: only that matrix changed, the residual stream only from block 1 on; the dataset labels
    no harmful instructions, so the refusal part says why it is skipped, and the model has no SAE."""
    import json

    from tests.api.tiny_models import chatml_tokenizer, register, tiny_llama

    tok = chatml_tokenizer(micro_workspace)
    register(client, tmp_path / "p", "diff-lora-parent", tiny_llama(tok, seed=4, init=0.3), tok)
    rows = [
        {"messages": [{"role": "user", "content": f"Name lake {i}."}, {"role": "assistant", "content": "Lake Loupe."}]}
        for i in range(24)
    ]
    data = "\n".join(json.dumps(r) for r in rows).encode()
    assert client.post("/api/datasets", files={"file": ("l.jsonl", data)}, data={"id": "diff-lakes"}).status_code == 201
    body = {
        "parent": "diff-lora-parent",
        "dataset_id": "diff-lakes",
        "model_id": "diff-lora-child",
        "max_steps": 6,
        "learning_rate": 2e-2,
        "target_modules": ["layers.1.mlp.down_proj"],
    }
    r = client.post("/api/finetunes", json=body)
    assert r.status_code == 202, r.text
    assert client.get(f"/api/jobs/{r.json()['job_id']}").json()["status"] == "done"

    _, out = _diff(client, model_id="diff-lora-child", dataset_id="diff-lakes", n_tokens=64)
    res = out["result"]
    assert res["parent_id"] == "diff-lora-parent"
    changed = [p["name"] for p in res["weights"]["params"] if p["relative"] > 0]
    assert changed == ["model.layers.1.mlp.down_proj.weight"]
    assert res["weights"]["layers"][0]["relative"] == 0 and res["weights"]["layers"][1]["relative"] > 0
    a = res["activations"]["layers"]
    assert a[0]["relative_l2"] == 0 and a[1]["relative_l2"] > 0
    assert "0 harmful and 0 harmless" in res["refusal"]["skipped"] and out["figures"]["refusal"] is None
    assert res["features"]["sae_id"] is None and "no SAE" in res["features"]["skipped"]
