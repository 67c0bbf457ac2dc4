"""Storage against both backends: SQLite always, the local PostgreSQL server as well."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC

import pytest
import sqlalchemy
from alembic.script import ScriptDirectory

from loupe.storage.db import Database, alembic_config
from loupe.storage.repositories import EvalRepository, JobRepository, ModelRepository, SAERepository, VectorRepository
from tests.conftest import POSTGRES_URL, postgres_or_skip, postgres_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'loupe.db'}")
        yield database
        database.dispose()
        return
    with postgres_schema(postgres_or_skip()) as url:
        database = Database(url)
        try:
            yield database
        finally:
            database.dispose()


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


def _at_once(n: int, fn) -> list[BaseException]:
    """Run fn(i) in n threads released together; the exceptions they raised."""
    start, errors = threading.Barrier(n), []

    def run(i: int) -> None:
        start.wait()
        try:
            fn(i)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_writes_of_one_label_all_succeed(db):
    """Two PUTs of one feature's label at once: both read "no label", both inserted, one was an
    IntegrityError (a 500) before the upsert was one INSERT ... ON CONFLICT DO UPDATE."""
    db.migrate()
    saes = SAERepository(db)
    for index in range(5):
        labels = [f"feature {index}, writer {i}" for i in range(8)]
        assert _at_once(8, lambda i, index=index, labels=labels: saes.set_label("sae", index, labels[i])) == []
        assert saes.label("sae", index) in labels
    saes.set_label("sae", 0, "")
    assert saes.label("sae", 0) is None and saes.label("sae", 1) is not None


def test_concurrent_upserts_of_one_vector_row_all_succeed(db):
    db.migrate()
    vectors = VectorRepository(db)
    fields = dict(model_id="m", hook="blocks.0.hook_resid_pre", layer=0, position=-1, d_model=4, source="import")
    errors = _at_once(
        8, lambda i: vectors.upsert("v", name=f"n{i}", path=f"/p{i}", scores={"i": i}, candidates={}, **fields)
    )
    assert errors == []
    row = vectors.get("v")
    assert row.name == f"n{row.scores['i']}" and row.path == f"/p{row.scores['i']}"


def test_timestamps_read_back_in_utc(db):
    """SQLite keeps no time zone: rows read back aware, in UTC, on both backends (the API's date-times
    carry an offset)."""
    db.migrate()
    jobs = JobRepository(db)
    job = jobs.create("build", "x")
    got = jobs.get(job.id).created_at
    assert got.tzinfo is not None and got.utcoffset().total_seconds() == 0
    assert abs((got - job.created_at).total_seconds()) < 1
    assert got.astimezone(UTC) == got


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
