"""The Generate page on a model with a chat template, in Chromium: the untouched preset prompt is written in
that template (the first form is made before the model is known, in the plain format), an edited prompt is
kept when the model changes, and the plain model gets its own format back."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.api.tiny_models import chatml_tokenizer, register, tiny_llama

pytestmark = pytest.mark.e2e


def test_the_preset_prompt_follows_the_models_chat_template(page, live_server, client, micro_workspace, tmp_path):
    tok = chatml_tokenizer(micro_workspace)
    register(client, tmp_path / "m", "e2e-chat-gen", tiny_llama(tok, seed=3), tok)
    default = client.get("/api/models").json()["default_id"]

    page.goto(live_server + "/generate")
    picker, prompt = page.get_by_test_id("global-model-select"), page.get_by_test_id("prompt-input")
    picker.select_option(default)  # the demo model: its plain format
    expect(prompt).to_have_value("User: How do I bake bread at home?\nAssistant:")

    picker.select_option("e2e-chat-gen")
    expect(page.get_by_test_id("generate-model")).to_have_text("e2e-chat-gen")
    expect(prompt).to_have_value("<|im_start|>user\nHow do I bake bread at home?<|im_end|>\n<|im_start|>assistant\n")
    expect(page.get_by_test_id("preset-harmless")).to_have_class(re.compile(r"\bactive\b"))

    picker.select_option(default)  # and back: the untouched preset returns to the plain format
    expect(prompt).to_have_value("User: How do I bake bread at home?\nAssistant:")
    picker.select_option("e2e-chat-gen")
    expect(prompt).to_have_value("<|im_start|>user\nHow do I bake bread at home?<|im_end|>\n<|im_start|>assistant\n")

    prompt.fill("<|im_start|>user\nmy own words<|im_end|>\n<|im_start|>assistant\n")
    picker.select_option(default)
    expect(page.get_by_test_id("generate-model")).not_to_have_text("e2e-chat-gen")
    expect(prompt).to_have_value("<|im_start|>user\nmy own words<|im_end|>\n<|im_start|>assistant\n")
