"""The build resumes after kill -9 without redoing finished steps or using half-written files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import sqlalchemy

from loupe.worlds import Build, open_world
from tests.conftest import micro_settings


def _env(ws_dir, **extra):
    env = {**os.environ, "LOUPE_WORKSPACE": str(ws_dir), "LOUPE_WORLD": "micro", "HF_HUB_OFFLINE": "1"}
    env.update(extra)
    return env


def _jobs(ws_dir):
    eng = sqlalchemy.create_engine(f"sqlite:///{ws_dir / 'loupe.db'}")
    try:
        with eng.connect() as c:
            rows = c.execute(sqlalchemy.text("select name, status, progress_done, error from jobs order by id")).all()
    except sqlalchemy.exc.OperationalError:  # the builder made the file but has not migrated it yet
        rows = []
    eng.dispose()
    return rows


def test_second_build_skips_everything(micro):
    world, c = micro
    build = Build(world, c)
    assert build.pipeline.pending() == []
    before = len(c.ws.jobs.list())
    build.run()
    assert len(c.ws.jobs.list()) == before


def test_kill_9_mid_training_resumes(tmp_path):
    ws_dir = tmp_path / "ws"
    overrides = json.dumps({"train_steps": 400, "checkpoint_every": 20})
    env = _env(ws_dir, LOUPE_WORLD_OVERRIDES=overrides)
    proc = subprocess.Popen(
        [sys.executable, "-m", "loupe.cli", "build", "--foreground"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            time.sleep(0.5)
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            if (ws_dir / "loupe.db").exists():
                rows = [r for r in _jobs(ws_dir) if r[0] == "demo.model"]
                if rows and rows[-1][2] >= 60:  # at least 3 checkpoints behind it
                    break
        else:
            raise AssertionError("training never got going")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (ws_dir / "artifacts" / "model" / "manifest.json").exists()

    done = subprocess.run(
        [sys.executable, "-m", "loupe.cli", "build", "--foreground"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _jobs(ws_dir)
    by_name: dict[str, list] = {}
    for name, status, _, error in rows:
        by_name.setdefault(name, []).append((status, error))
    for step in ("demo.corpus", "demo.tokenizer", "demo.tokens"):
        assert by_name[step] == [("done", None)], step  # not redone
    (first_status, first_error), (second_status, _) = by_name["demo.model"]
    assert first_status == "failed" and "interrupted" in first_error
    assert second_status == "done"
    training = json.loads((ws_dir / "artifacts" / "model" / "loupe.json").read_text())["training"]
    assert training["resumed_from"] >= 60
    assert not list((ws_dir / "artifacts").glob(".tmp-*"))
    world, c = open_world(micro_settings(ws_dir, world_overrides=json.loads(overrides)))
    assert c.models.record("demo") is not None
    pipeline = Build(world, c).pipeline
    # --foreground built everything up to the model; only the background analyses remain
    pending = pipeline.pending()
    assert pending[0].name == "demo.eval" and all(s.background for s in pending)
    assert [s.name for s in pipeline.pending(background=False)] == []
    c.close()
