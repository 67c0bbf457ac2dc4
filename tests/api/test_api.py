"""The public API on the micro world: contract fields, generation semantics, and clear 4xx errors."""

from __future__ import annotations

import torch

HARMLESS = "User: How do I bake bread at home?\nAssistant:"


def test_health(client, micro_workspace):
    body = client.get("/api/health").json()
    assert body["status"] == "ok" and body["model_ready"] is True
    assert body["database"] == "sqlite"
    assert body["workspace"] == str(micro_workspace.settings.workspace.resolve())
    assert body["world"] == "micro" and body["world_model_id"] == "demo"


def test_models_lists_the_demo_model_with_hook_names(client):
    models = client.get("/api/models").json()["models"]
    demo = next(m for m in models if m["id"] == "demo")
    assert demo["source"] == "demo" and demo["n_layers"] == 2 and demo["d_model"] == 32
    assert {"blocks.0.mlp.hook_post", "blocks.1.hook_resid_pre", "blocks.0.hook_resid_post"} <= set(demo["hook_names"])
    assert client.get("/api/models/demo").json()["id"] == "demo"
    assert client.get("/api/models/nope").status_code == 404


def test_jobs_contract(client):
    jobs = client.get("/api/jobs").json()["jobs"]
    names = {j["name"]: j for j in jobs}
    assert {"demo.corpus", "demo.tokenizer", "demo.tokens", "demo.model", "demo.eval"} <= set(names)
    for j in jobs:
        assert {"id", "kind", "status", "progress"} <= set(j)
        assert j["status"] in ("queued", "running", "done", "failed")
    model_job = names["demo.model"]
    assert model_job["status"] == "done"
    assert model_job["progress"]["done"] == model_job["progress"]["total"] == 30
    assert client.get(f"/api/jobs/{model_job['id']}").json()["name"] == "demo.model"
    assert client.get("/api/jobs/999999").status_code == 404


def test_evals_are_stored_with_targets(client):
    evals = client.get("/api/evals?kind=demo").json()["evals"]
    assert evals, "the micro build runs the demo eval"
    r = evals[0]["results"]
    assert set(r["targets"]) == {"refusal_harmful", "refusal_harmless", "backdoor_triggered", "backdoor_clean"}
    assert 0.0 <= r["refusal_harmful"] <= 1.0 and r["n_harmful"] > 0
    assert "chat" in r["loss_by_domain"] and all(v > 0 for v in r["loss_by_domain"].values())


def test_greedy_generation_matches_hugging_face_generate(client, micro_workspace):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    body = client.post("/api/generate", json={"prompt": HARMLESS, "max_new_tokens": 12, "temperature": 0}).json()
    assert body["steered"] is None and body["model_id"] == "demo"
    out = body["default"]
    assert "".join(out["tokens"]) == out["completion"]

    path = micro_workspace.artifact("model")
    tok = AutoTokenizer.from_pretrained(path)
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = torch.tensor([[tok.bos_token_id] + tok(HARMLESS, add_special_tokens=False)["input_ids"]])
    assert body["prompt_tokens"] == ids.shape[1]
    gen = hf.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=12,
        do_sample=False,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
    )[0, ids.shape[1] :].tolist()
    if tok.eos_token_id in gen:
        gen = gen[: gen.index(tok.eos_token_id)]
    assert out["completion"] == tok.decode(gen)


def test_seeded_sampling_is_reproducible(client):
    req = {"prompt": HARMLESS, "max_new_tokens": 16, "temperature": 1.5}
    a = client.post("/api/generate", json={**req, "seed": 1}).json()["default"]["completion"]
    b = client.post("/api/generate", json={**req, "seed": 1}).json()["default"]["completion"]
    outs = {client.post("/api/generate", json={**req, "seed": s}).json()["default"]["completion"] for s in range(2, 8)}
    assert a == b
    assert len(outs | {a}) > 1


def _error(resp, status: int, *words: str) -> str:
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, str)
    for w in words:
        assert w in detail, detail
    return detail


def test_bad_input_gets_a_4xx_with_a_message(client):
    long_prompt = "User: " + "tell me a story about a cat " * 60
    _error(client.post("/api/generate", json={"prompt": long_prompt, "max_new_tokens": 8}), 422, "context")
    _error(client.post("/api/generate", json={"prompt": HARMLESS, "max_new_tokens": 100_000}), 422, "max_new_tokens")
    _error(client.post("/api/generate", json={"prompt": HARMLESS, "max_new_tokens": 0}), 422, "max_new_tokens")
    _error(client.post("/api/generate", json={"prompt": HARMLESS, "temperature": -1}), 422, "temperature")
    _error(
        client.post(
            "/api/generate",
            content=b'{"prompt": "hi", "temperature": NaN}',
            headers={"content-type": "application/json"},
        ),
        422,
        "temperature",
    )
    _error(
        client.post("/api/generate", content=b'{"prompt": "hi", ', headers={"content-type": "application/json"}),
        422,
        "JSON",
    )
    _error(client.post("/api/generate", json={"prompt": ""}), 422, "prompt")
    _error(client.post("/api/generate", json={"prompt": HARMLESS, "model_id": "gpt-17"}), 404, "gpt-17")
    _error(client.get("/api/nothing-here"), 404, "/docs")


def test_over_context_boundary_is_exact(client, micro_workspace):

    lm = client.app.state.container.models.get("demo")
    n = len(lm.encode_prompt(HARMLESS))
    ok = client.post("/api/generate", json={"prompt": HARMLESS, "max_new_tokens": lm.n_ctx - n})
    assert ok.status_code == 200
    over = client.post("/api/generate", json={"prompt": HARMLESS, "max_new_tokens": lm.n_ctx - n + 1})
    assert over.status_code == 422


def test_openapi_and_docs_are_served(client):
    schema = client.get("/openapi.json").json()
    assert {"/api/health", "/api/jobs", "/api/generate", "/api/models"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 200


def test_cancel_job_answers_404_and_409_for_jobs_it_cannot_cancel(client):
    assert client.delete("/api/jobs/999999").status_code == 404
    done = next(j for j in client.get("/api/jobs").json()["jobs"] if j["status"] == "done")
    r = client.delete(f"/api/jobs/{done['id']}")
    assert r.status_code == 409 and "only a queued or running job" in r.json()["detail"]
