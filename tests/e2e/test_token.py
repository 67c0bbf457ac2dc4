"""A server with a token (LOUPE_TOKEN): the page asks for it once, keeps it for the tab, and every
request sends it, the streaming generate included."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from playwright.sync_api import expect
from pydantic import SecretStr
from safetensors.torch import load

from tests.conftest import running_server

pytestmark = pytest.mark.e2e

TOKEN = "e2e-token-0123456789abcdef"
PROMPT = "User: How do I bake bread at home?\nAssistant:"


@pytest.fixture(scope="module")
def token_server(micro_container):
    from loupe.app import create_app

    settings = micro_container.settings.model_copy(update={"token": SecretStr(TOKEN)})
    with running_server(create_app(settings, container=micro_container, background=False)) as url:
        yield url


def test_the_page_asks_for_the_token_once_and_then_streams(page, token_server, client):
    body = {
        "prompt": PROMPT,
        "max_new_tokens": 8,
        "temperature": 0,
        "interventions": [{"kind": "ablate_direction", "vector_id": "demo-refusal"}],
    }
    want = client.post("/api/generate", json=body).json()
    page.goto(token_server + "/steer")
    dialog = page.get_by_test_id("token-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_have_count(1)  # one dialog for all the requests refused together
    page.get_by_test_id("token-input").fill("not-the-token-0000000000")
    page.get_by_test_id("token-submit").click()
    expect(page.get_by_test_id("token-rejected")).to_be_visible()
    page.get_by_test_id("token-input").fill(TOKEN)
    page.get_by_test_id("token-submit").click()
    expect(dialog).to_have_count(0)
    expect(page.get_by_test_id("candidate-table")).to_be_visible(timeout=30_000)

    page.get_by_test_id("steer-prompt").fill(PROMPT)
    page.get_by_test_id("steer-max-tokens").fill("8")
    page.get_by_test_id("steer-method").select_option("ablation")
    page.get_by_test_id("steer-run").click()
    expect(page.get_by_test_id("steer-run")).to_have_text("Generate", timeout=60_000)
    expect(page.get_by_test_id("steer-default")).to_have_text(want["default"]["completion"].strip() or re.compile(".*"))
    expect(page.get_by_test_id("steer-steered")).to_have_text(want["steered"]["completion"].strip() or re.compile(".*"))
    assert page.evaluate("sessionStorage.getItem('loupe.token')") == TOKEN
    # the direction's export is fetched with the token too (a plain link could not send it)
    with page.expect_download() as download:
        page.get_by_test_id("vector-export").click()
    assert download.value.suggested_filename == "demo-refusal.safetensors"
    got = load(Path(download.value.path()).read_bytes())
    want_tensors = load(client.get("/api/vectors/demo-refusal/export").content)
    assert got.keys() == want_tensors.keys() and all(torch.equal(got[k], want_tensors[k]) for k in got)

    # kept for the tab: a reload does not ask again
    page.reload()
    expect(page.get_by_test_id("candidate-table")).to_be_visible(timeout=30_000)
    expect(dialog).to_have_count(0)
