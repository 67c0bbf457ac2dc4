"""Fixtures of the API tests beside the session's micro world (tests/conftest.py)."""

from __future__ import annotations

import shutil
import time

import pytest


def _scratch_client(micro_workspace, tmp_path, executor=None):
    from fastapi.testclient import TestClient

    from loupe.app import create_app
    from loupe.worlds import open_world
    from tests.conftest import micro_settings

    root = tmp_path / "ws"
    shutil.copytree(micro_workspace.settings.workspace, root)
    _, c = open_world(micro_settings(root), executor=executor)
    with TestClient(create_app(container=c, background=False)) as client:
        yield client, c
    c.close()


@pytest.fixture()
def scratch(micro_workspace, tmp_path):
    """A client on a copy of the micro workspace (jobs on worker threads), for failures and cancels."""
    yield from _scratch_client(micro_workspace, tmp_path)


@pytest.fixture()
def inline_scratch(micro_workspace, tmp_path):
    """As `scratch`, its jobs run in the caller's thread: a failure the test causes stays out of the shared
    workspace, whose pages expect every job done."""
    from loupe.jobs.executors import InlineExecutor

    yield from _scratch_client(micro_workspace, tmp_path, InlineExecutor())


def wait_until(pred, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not (out := pred()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return out
