"""Shared fixtures: a micro world built in seconds by the real build pipeline."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests download nothing
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Starlette's TestClient sends `Host: testserver`; the live servers use 127.0.0.1
os.environ.setdefault("LOUPE_ALLOWED_HOSTS", "testserver,localhost,127.0.0.1,::1")

POSTGRES_URL = os.environ.get("LOUPE_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def micro_settings(workspace: Path, **overrides):
    from loupe.settings import Settings

    return Settings(**{"workspace": workspace, "world": "micro", "database_url": None, "threads": 0, **overrides})


@pytest.fixture(scope="session")
def micro(tmp_path_factory):
    """(world, container) of a workspace with the micro world fully built (corpus, tokenizer, tokens,
    model, eval and the background analyses but influence), jobs run in the caller's thread."""
    from loupe.jobs.executors import InlineExecutor
    from loupe.worlds import Build, open_world

    root = tmp_path_factory.mktemp("micro")
    seed = os.environ.get("LOUPE_TEST_SEED_WORKSPACE")
    if seed:  # development only: start from a copy of a built micro workspace; finished steps are skipped
        import shutil

        shutil.copytree(seed, root, dirs_exist_ok=True)
    world, c = open_world(micro_settings(root), executor=InlineExecutor())
    Build(world, c).run()
    yield world, c
    c.close()


def copy_of_micro(micro_container, dest: Path) -> Path:
    """A copy of the built micro workspace at `dest`, for tests that change what they read (its model
    rows still point at the original's files, which they only read)."""
    import shutil

    shutil.copytree(micro_container.settings.workspace, dest, dirs_exist_ok=True)
    return dest


@pytest.fixture(scope="session")
def micro_container(micro):
    return micro[1]


@pytest.fixture(scope="session")
def micro_workspace(micro_container):
    return micro_container.ws


@pytest.fixture(scope="session")
def micro_app(micro_container):
    from loupe.app import create_app

    return create_app(container=micro_container, background=False)


@pytest.fixture(scope="session")
def client(micro_app):
    from fastapi.testclient import TestClient

    with TestClient(micro_app) as c:
        yield c


def postgres_or_skip(url: str = POSTGRES_URL) -> str:
    """Return a reachable PostgreSQL URL; in CI an unreachable server fails the test, elsewhere it skips."""
    import sqlalchemy

    try:
        eng = sqlalchemy.create_engine(url)
        with eng.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        eng.dispose()
    except Exception as exc:  # noqa: BLE001 - any connection failure means the same thing here
        msg = (
            f"PostgreSQL is not reachable at {url} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return url


@contextmanager
def postgres_schema(base: str) -> Iterator[str]:
    """A URL of `base` whose tables live in a fresh schema of their own, dropped afterwards."""
    import sqlalchemy

    schema = f"loupe_test_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f'create schema "{schema}"'))
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f'drop schema "{schema}" cascade'))
        admin.dispose()


@contextmanager
def running_server(app) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(10)
