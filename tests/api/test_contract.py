"""The OpenAPI schema is the frontend's contract: the committed copy and the generated TypeScript
types must match what the code serves (regenerate both with `make openapi`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from loupe.cli import openapi_json

ROOT = Path(__file__).resolve().parents[2]


def test_committed_openapi_schema_matches_the_app():
    committed = json.loads((ROOT / "frontend" / "openapi.json").read_text())
    assert committed == json.loads(openapi_json()), "frontend/openapi.json drifted: run `make openapi`"


def test_public_contract_fields():
    schema = json.loads(openapi_json())
    props = lambda name: set(schema["components"]["schemas"][name]["properties"])  # noqa: E731
    assert {"id", "kind", "status", "progress"} <= props("JobOut")
    assert {"prompt", "max_new_tokens", "temperature", "seed", "interventions"} <= props("GenerateRequest")
    assert {"default", "steered"} <= props("GenerateResponse")
    assert {"completion", "tokens"} <= props("CompletionOut")
    assert "status" in props("Health")


def test_generated_typescript_types_match_the_schema():
    if not (ROOT / "frontend" / "node_modules").is_dir():
        pytest.fail("frontend/node_modules is missing: run `make frontend` (make test does it)")
    npm = shutil.which("npm")
    res = subprocess.run([npm, "run", "-s", "check:api"], cwd=ROOT / "frontend", capture_output=True, text=True)
    assert res.returncode == 0, f"src/api/schema.d.ts drifted: run `make openapi`\n{res.stdout}\n{res.stderr}"
