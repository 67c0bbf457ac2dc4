"""Storage against both backends: SQLite always, the local PostgreSQL server as well."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import sqlalchemy
from alembic.script import ScriptDirectory

from loupe.storage.db import Database, alembic_config
from loupe.storage.repositories import EvalRepository, JobRepository, ModelRepository
from tests.conftest import POSTGRES_URL, postgres_or_skip


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'loupe.db'}")
        yield database
        database.dispose()
        return
    base = postgres_or_skip()
    schema = f"loupe_test_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f'create schema "{schema}"'))
    database = Database(f"{base}?options=-csearch_path%3D{schema}")
    try:
        yield database
    finally:
        database.dispose()
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f'drop schema "{schema}" cascade'))
        admin.dispose()


def test_migrations_create_tables_and_are_idempotent(db):
    db.migrate()
    db.migrate()
    names = set(sqlalchemy.inspect(db.engine).get_table_names())
    assert {"jobs", "models", "evals", "saes", "sae_features", "feature_labels", "alembic_version"} <= names
    head = ScriptDirectory.from_config(alembic_config(db.url)).get_current_head()
    with db.engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("select version_num from alembic_version")).scalar() == head


def test_job_lifecycle(db):
    db.migrate()
    jobs = JobRepository(db)
    job = jobs.create("build", "demo.corpus", {"scale": 0.5})
    assert jobs.get(job.id).status == "queued"
    jobs.mark_running(job.id)
    jobs.progress(job.id, 3, 10, "three of ten")
    got = jobs.get(job.id)
    assert (got.status, got.progress_done, got.progress_total, got.message) == ("running", 3, 10, "three of ten")
    assert got.pid == os.getpid() and got.started_at is not None
    jobs.finish(job.id, artifacts={"dir": "/x"})
    got = jobs.get(job.id)
    assert got.status == "done" and got.progress_done == 10 and got.artifacts == {"dir": "/x"}
    assert got.finished_at >= got.started_at
    assert jobs.latest_done("demo.corpus").id == job.id

    bad = jobs.create("build", "demo.model")
    jobs.mark_running(bad.id)
    jobs.fail(bad.id, "ValueError: boom")
    assert jobs.get(bad.id).status == "failed" and "boom" in jobs.get(bad.id).error
    assert [j.id for j in jobs.list()] == [bad.id, job.id]
    assert [j.id for j in jobs.list(kind="build", limit=1)] == [bad.id]


def test_jobs_of_a_dead_process_are_marked_interrupted(db):
    db.migrate()
    jobs = JobRepository(db)
    job = jobs.create("build", "demo.model")
    # a process that has exited: its pid is free (or at least not ours)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    jobs.mark_running(job.id)
    with db.session() as s:
        from loupe.storage.models import Job

        s.get(Job, job.id).pid = int(dead.stdout)
    live = jobs.create("build", "demo.eval")
    jobs.mark_running(live.id)  # this process: alive
    assert jobs.fail_orphans() == 1
    assert jobs.get(job.id).status == "failed" and "interrupted" in jobs.get(job.id).error
    assert jobs.get(live.id).status == "running"


def test_models_and_evals(db):
    db.migrate()
    models, evals = ModelRepository(db), EvalRepository(db)
    models.upsert("demo", "demo", "demo", "/m", {"n_layers": 2})
    models.upsert("demo", "demo v2", "demo", "/m2", {"n_layers": 3})
    assert [(m.id, m.name, m.config["n_layers"]) for m in models.list()] == [("demo", "demo v2", 3)]
    evals.add("demo", "demo", {"refusal_harmful": 0.97, "nested": {"a": [1, 2]}})
    row = evals.list(kind="demo")[0]
    assert row.results["nested"] == {"a": [1, 2]}


def test_postgres_url_setting_selects_postgres(monkeypatch, tmp_path):
    url = postgres_or_skip()
    monkeypatch.setenv("LOUPE_DATABASE_URL", url)
    from loupe.settings import Settings

    s = Settings(workspace=tmp_path)
    assert s.resolved_database_url == POSTGRES_URL == url
    assert Database(s.resolved_database_url).dialect == "postgresql"


def _upgrade_to(db, revision: str) -> None:
    from alembic import command

    cfg = alembic_config(db.url)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def test_migrations_version_labels_and_make_vector_paths_relative(db, tmp_path):
    """0005: existing SAEs are version 1 and their labels were written for it. 0006: vector paths become
    relative to the workspace: under it, or of a workspace moved since (the layout), or relative to an
    old working directory; a path elsewhere stays as it is."""
    _upgrade_to(db, "0004")
    ws = tmp_path / "ws"
    now = "2026-12-01 00:00:00"
    rows = {
        "here": str(ws / "artifacts" / "vectors" / "here" / "vector.safetensors"),
        "moved": "/old/place/artifacts/vectors/moved/vector.safetensors",
        "cwd": "workspace/artifacts/vectors/cwd/vector.safetensors",
        "elsewhere": "/data/my-vector.safetensors",
    }
    with db.engine.begin() as conn:
        conn.execute(
            sqlalchemy.text(
                "insert into saes (id, model_id, hook_name, architecture, d_in, d_sae, source, path, metrics, "
                "dashboards, created_at) values ('s', 'demo', 'h', 'topk', 4, 8, 'demo', '/p', '{}', '{}', :now)"
            ),
            {"now": now},
        )
        conn.execute(
            sqlalchemy.text(
                "insert into feature_labels (sae_id, \"index\", label, updated_at) values ('s', 2, 'dna', :now)"
            ),
            {"now": now},
        )
        for vid, path in rows.items():
            conn.execute(
                sqlalchemy.text(
                    "insert into vectors (id, name, model_id, hook, layer, d_model, source, path, scores, candidates, "
                    "created_at) values (:id, :id, 'demo', 'h', 0, 4, 'build', :path, '{}', '{}', :now)"
                ),
                {"id": vid, "path": path, "now": now},
            )
    db.migrate(ws)
    with db.engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("select version, weights_key from saes")).one() == (1, None)
        assert conn.execute(sqlalchemy.text("select sae_version from feature_labels")).scalar() == 1
        paths = dict(conn.execute(sqlalchemy.text("select id, path from vectors")).all())
    assert paths == {
        "here": "artifacts/vectors/here/vector.safetensors",
        "moved": "artifacts/vectors/moved/vector.safetensors",
        "cwd": "artifacts/vectors/cwd/vector.safetensors",
        "elsewhere": "/data/my-vector.safetensors",
    }
