"""Another Hugging Face causal LM (here a GPT-2, not GPT-NeoX) goes through the same code path."""

from __future__ import annotations

import torch

from tests.api.tiny_models import tiny_gpt2


def test_a_second_model_directory_registers_and_generates(client, micro_workspace, tmp_path):
    path = tmp_path / "gpt2-tiny"
    model, tok = tiny_gpt2(micro_workspace, path, n_positions=48, n_layer=3)

    rec = client.app.state.container.models.register("gpt2-tiny", str(path), "hf-dir")
    assert rec.config["n_layers"] == 3 and rec.config["n_ctx"] == 48

    listed = {m["id"]: m for m in client.get("/api/models").json()["models"]}
    assert "blocks.2.hook_resid_post" in listed["gpt2-tiny"]["hook_names"]

    body = client.post(
        "/api/generate", json={"prompt": "User: hi\nAssistant:", "max_new_tokens": 6, "model_id": "gpt2-tiny"}
    ).json()
    assert body["model_id"] == "gpt2-tiny"
    ids = torch.tensor([[tok.bos_token_id] + tok("User: hi\nAssistant:", add_special_tokens=False)["input_ids"]])
    expect = (
        model.eval()
        .generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=tok.eos_token_id,
            eos_token_id=tok.eos_token_id,
        )[0, ids.shape[1] :]
        .tolist()
    )
    if tok.eos_token_id in expect:
        expect = expect[: expect.index(tok.eos_token_id)]
    assert body["default"]["completion"] == tok.decode(expect)

    over = client.post(
        "/api/generate", json={"prompt": "User: " + "word " * 60, "max_new_tokens": 4, "model_id": "gpt2-tiny"}
    )
    assert over.status_code == 422 and "48" in over.json()["detail"]


def test_registering_a_missing_directory_is_a_4xx(client, tmp_path):
    from loupe.errors import Unprocessable

    try:
        client.app.state.container.models.register("x", str(tmp_path / "nope"), "hf-dir")
    except Unprocessable as exc:
        assert "not a directory" in exc.message
    else:
        raise AssertionError("expected Unprocessable")


def test_serve_alone_registers_the_model_it_was_given(micro_workspace, tmp_path):
    # `loupe serve` with LOUPE_MODEL (create_app without a container) answers for that model at once
    from fastapi.testclient import TestClient

    from loupe.app import create_app
    from loupe.settings import Settings

    path = tmp_path / "outside"
    tiny_gpt2(micro_workspace, path, n_positions=32, n_layer=2, n_embd=16)
    settings = Settings(workspace=tmp_path / "ws", database_url=None, world="micro", model=str(path))
    app = create_app(settings, background=False)
    with TestClient(app) as client:
        models = client.get("/api/models").json()["models"]
        assert [m["id"] for m in models] == ["external"]
        out = client.post("/api/generate", json={"prompt": "User: hi", "max_new_tokens": 2})
        assert out.status_code == 200 and out.json()["model_id"] == "external"
