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


# Numbers a request may carry without an upper bound, each with its reason (none so far).
UNBOUNDED: dict[str, str] = {}


def _numbers_without_bounds(schema: dict) -> list[str]:
    """Every integer/number a request can carry (in a body, however nested, or a query/path parameter)
    that lacks a declared minimum or maximum, as "METHOD /path field.subfield"."""
    comps = schema["components"]["schemas"]

    def resolve(x: dict) -> dict:
        while "$ref" in x:
            x = comps[x["$ref"].rsplit("/", 1)[-1]]
        return x

    found: list[str] = []

    def visit(x: dict, where: str, seen: frozenset[str]) -> None:
        ref = x.get("$ref")
        if ref in seen:
            return
        seen = seen | {ref} if ref else seen
        x = resolve(x)
        for alt in x.get("anyOf", []) + x.get("oneOf", []) + x.get("allOf", []):
            visit(alt, where, seen)
        if x.get("type") in ("integer", "number"):
            low = "minimum" in x or "exclusiveMinimum" in x
            high = "maximum" in x or "exclusiveMaximum" in x
            if not (low and high):
                found.append(where)
        if "items" in x:
            visit(x["items"], f"{where}[]", seen)
        for name, prop in x.get("properties", {}).items():
            visit(prop, f"{where}.{name}", seen)
        if isinstance(x.get("additionalProperties"), dict):
            visit(x["additionalProperties"], f"{where}.*", seen)

    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            label = f"{method.upper()} {path}"
            for p in op.get("parameters", []):
                visit(p["schema"], f"{label} {p['in']}.{p['name']}", frozenset())
            for media in op.get("requestBody", {}).get("content", {}).values():
                visit(media.get("schema", {}), f"{label} body", frozenset())
    return found


def test_every_number_a_request_takes_has_declared_bounds():
    """Issue 19: every numeric parameter has an upper bound the schema declares (and a lower one): no
    integer overflows a database column, no magnitude makes NaN, no request asks for unbounded work."""
    missing = [w for w in _numbers_without_bounds(json.loads(openapi_json())) if w not in UNBOUNDED]
    assert missing == [], "give these numbers ge=/le= bounds (or list them in UNBOUNDED with a reason):\n" + "\n".join(
        missing
    )


def test_the_bounds_check_finds_an_unbounded_number():
    schema = {
        "components": {"schemas": {"B": {"properties": {"n": {"type": "integer", "minimum": 0}}}}},
        "paths": {
            "/x/{i}": {
                "post": {
                    "parameters": [{"in": "path", "name": "i", "schema": {"type": "integer", "maximum": 9}}],
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {"type": "array", "items": {"$ref": "#/components/schemas/B"}}
                            }
                        }
                    },
                }
            }
        },
    }
    assert _numbers_without_bounds(schema) == ["POST /x/{i} path.i", "POST /x/{i} body[].n"]


def test_every_error_response_declares_the_shared_error_body():
    """4xx responses are declared with one body, `{"detail": str, "errors"?: [...]}`, the one the app sends
    (FastAPI's own 422 declares `detail` as a list)."""
    schema = json.loads(openapi_json())
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            assert "422" in op["responses"], (method, path)
            for status, resp in op["responses"].items():
                if status.startswith("4"):
                    body = resp["content"]["application/json"]["schema"]
                    assert body == {"$ref": "#/components/schemas/ErrorOut"}, (method, path, status)
