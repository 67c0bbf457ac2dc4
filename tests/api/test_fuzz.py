"""Schemathesis over the whole OpenAPI schema: no input gets a 5xx, and every response keeps to the
declared schema (its status code is declared, its body matches). A fixed seed and a bounded number of
examples per operation keep the run short and the same on every machine.

It runs on a copy of the micro world's workspace (what it writes stays there) whose jobs are queued and
never run: an operation that starts a job is checked up to the queued job it answers with, and no
fuzzed SAE training or Jacobian run takes the test's time."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from loupe.cli import openapi_json
from tests.conftest import copy_of_micro, micro_settings

SEED = int(os.environ.get("LOUPE_FUZZ_SEED", "19"))
# per operation, positive and negative cases together; LOUPE_FUZZ_EXAMPLES=200 (and another
# LOUPE_FUZZ_SEED) for a deeper run by hand
EXAMPLES = int(os.environ.get("LOUPE_FUZZ_EXAMPLES", "12"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


class QueueOnly:
    """An executor that keeps every job queued: the fuzz checks requests, not the jobs they start."""

    name = "queue-only"

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        return Future()

    def shutdown(self, wait: bool = True) -> None:
        return None


@pytest.fixture(scope="module")
def fuzz_app(micro_container, tmp_path_factory):
    from loupe.app import create_app
    from loupe.worlds import open_world

    root = copy_of_micro(micro_container, tmp_path_factory.mktemp("fuzz"))
    _, c = open_world(micro_settings(root), executor=QueueOnly())
    yield create_app(container=c, background=False)
    c.close()


# The schema the code serves (the same document as `loupe openapi`); the live app answers the requests.
schema = schemathesis.openapi.from_dict(
    json.loads(openapi_json()),
    config=SchemathesisConfig.from_dict(
        {"seed": SEED, "generation": {"mode": "all", "max-examples": EXAMPLES, "deterministic": True}}
    ),
)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_api_keeps_its_schema(case, fuzz_app):
    case.call_and_validate(checks=CHECKS, app=fuzz_app)
