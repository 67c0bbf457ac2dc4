"""Chat templates: `messages` are rendered with the tokenizer's template where it has one (a tiny random
Llama with a ChatML template whose BOS is `<|im_start|>`, as SmolLM2's), the BOS is never doubled, and
greedy generation equals Hugging Face `generate` on the same rendered ids; without a template (the micro
world's model), the plain `User: ...\\nAssistant:` format."""

from __future__ import annotations

import json

import pytest
import torch

from tests.api.tiny_models import chatml_tokenizer, register, tiny_llama

MODEL_ID = "llama-chat-tiny"
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "How do plants make food?"},
]


@pytest.fixture(scope="module")
def llama_chat(client, micro_workspace, tmp_path_factory):
    """(HF model, tokenizer) of a tiny random Llama with a chat template, registered as MODEL_ID."""
    tok = chatml_tokenizer(micro_workspace)
    # larger random weights: clear argmax margins for greedy equality
    model = tiny_llama(tok, 0, init=0.2)
    register(client, tmp_path_factory.mktemp("llama-chat") / "model", MODEL_ID, model, tok)
    return model, tok


def hf_greedy(model, tok, ids: list[int], n: int) -> list[int]:
    x = torch.tensor([ids])
    out = model.generate(
        input_ids=x,
        attention_mask=torch.ones_like(x),
        max_new_tokens=n,
        do_sample=False,
        pad_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )[0, x.shape[1] :].tolist()
    return out[: out.index(tok.eos_token_id)] if tok.eos_token_id in out else out


def test_messages_use_the_template_and_greedy_equals_hf_generate(client, llama_chat):
    model, tok = llama_chat
    expect_text = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    expect_ids = tok.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True, return_dict=False)
    assert expect_text.startswith("<|im_start|>system\n")

    r = client.post("/api/generate", json={"messages": MESSAGES, "max_new_tokens": 12, "model_id": MODEL_ID})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rendered_prompt"] == expect_text
    assert body["prompt_token_ids"] == expect_ids
    assert body["prompt_tokens"] == len(expect_ids)
    # the BOS exactly once, at position 0; the template's other `<|im_start|>`s are turn markers
    assert body["prompt_token_ids"][0] == tok.bos_token_id
    assert body["prompt_token_strings"][0] == "<|im_start|>"
    assert body["prompt_token_ids"][1] != tok.bos_token_id
    assert body["prompt_token_ids"].count(tok.bos_token_id) == expect_text.count("<|im_start|>")
    assert "<|im_end|>" in body["prompt_token_strings"]  # special tokens in the text are their ids

    expect = hf_greedy(model, tok, expect_ids, 12)
    assert len(expect) >= 4
    assert body["default"]["completion"] == tok.decode(expect)
    assert body["default"]["tokens"] == [tok.decode([t]) for t in expect]

    # the rendered text given as a raw prompt: the same ids (no second BOS), the same completion
    raw = client.post("/api/generate", json={"prompt": expect_text, "max_new_tokens": 12, "model_id": MODEL_ID})
    assert raw.json()["prompt_token_ids"] == expect_ids
    assert raw.json()["default"] == body["default"]


def test_stream_start_event_carries_the_rendered_prompt(client, llama_chat):
    r = client.post("/api/generate/stream", json={"messages": MESSAGES, "max_new_tokens": 6, "model_id": MODEL_ID})
    assert r.status_code == 200
    events = [json.loads(line) for line in r.text.splitlines() if line]
    start, done = events[0], events[-1]
    assert start["event"] == "start" and done["event"] == "done"
    whole = client.post("/api/generate", json={"messages": MESSAGES, "max_new_tokens": 6, "model_id": MODEL_ID}).json()
    for k in ("rendered_prompt", "prompt_token_ids", "prompt_token_strings", "prompt_tokens"):
        assert start[k] == whole[k]
    assert done["default"] == whole["default"]


def test_a_last_assistant_message_is_continued(client, llama_chat):
    _, tok = llama_chat
    msgs = [*MESSAGES, {"role": "assistant", "content": "They use"}]
    body = client.post("/api/generate", json={"messages": msgs, "max_new_tokens": 2, "model_id": MODEL_ID}).json()
    assert body["rendered_prompt"] == tok.apply_chat_template(msgs, tokenize=False, continue_final_message=True)
    assert body["rendered_prompt"].endswith("<|im_start|>assistant\nThey use")


def test_next_token_accepts_messages(client, llama_chat):
    _, tok = llama_chat
    text = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    chat = client.post("/api/steering/next-token", json={"messages": MESSAGES, "model_id": MODEL_ID})
    assert chat.status_code == 200, chat.text
    raw = client.post("/api/steering/next-token", json={"prompt": text, "model_id": MODEL_ID}).json()
    assert chat.json()["rendered_prompt"] == text
    assert chat.json()["prompt_tokens"] == raw["prompt_tokens"]
    assert chat.json()["prompt_tokens"][0] == "<|im_start|>" and chat.json()["prompt_tokens"][1] != "<|im_start|>"
    assert chat.json()["default"] == raw["default"]
    both = client.post("/api/steering/next-token", json={"prompt": "x", "messages": MESSAGES})
    assert both.status_code == 422


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"prompt": "User: hi\nAssistant:", "messages": [{"role": "user", "content": "hi"}]}, "exactly one"),
        ({"max_new_tokens": 4}, "exactly one"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "role"),
        ({"messages": [{"role": "user", "content": "x" * 20_001}]}, "content"),
        ({"messages": [{"role": "user", "content": "hi"}] * 65}, "messages"),
        (
            {"messages": [{"role": "user", "content": "x" * 15_000}, {"role": "assistant", "content": "y" * 6_000}]},
            "limit",
        ),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}, "system"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "alternate"),
        ({"messages": [{"role": "system", "content": "a"}]}, "user message"),
    ],
)
def test_bad_prompts_are_422_with_a_message(client, body, needle):
    for path in ("/api/generate", "/api/generate/stream"):
        r = client.post(path, json={"max_new_tokens": 4, **body})
        assert r.status_code == 422, r.text
        assert needle in r.json()["detail"]


def test_a_model_without_a_template_gets_the_plain_format(client):
    lm = client.app.state.container.models.get(None)
    assert not lm.has_chat_template
    chat = client.post(
        "/api/generate", json={"messages": [{"role": "user", "content": "How do I bake bread?"}], "max_new_tokens": 8}
    ).json()
    assert chat["rendered_prompt"] == "User: How do I bake bread?\nAssistant:"
    raw = client.post("/api/generate", json={"prompt": "User: How do I bake bread?\nAssistant:", "max_new_tokens": 8})
    assert raw.json()["prompt_token_ids"] == chat["prompt_token_ids"]
    assert raw.json()["default"] == chat["default"]
    assert chat["prompt_token_ids"].count(lm.tokenizer.bos_token_id) == 1
