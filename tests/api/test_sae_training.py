"""SAE training from the app (POST /api/saes/train) on a registered dataset, for any hook: a chain of
jobs (tokens, cache, train, eval, dashboards) whose ids come back at once; the SAE gets finite quality
metrics on the dataset's held-out tokens and served dashboards. DELETE /api/saes/{id}; a failed
dashboard chain shows "failed" with its job's error and can be retried; cancelling a job of the chain
fails the rest unrun. The failure and cancel tests run on a copy of the micro workspace, so the shared
one keeps only finished jobs."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from loupe.storage.artifacts import read_manifest
from tests.api.conftest import wait_until

TEXTS = [
    f"The river {w} flows past the {v} mill, and the miller counts {i} sacks of grain by the water."
    for i, (w, v) in enumerate([("Avon", "old"), ("Thames", "red"), ("Severn", "stone"), ("Trent", "new")] * 12)
]


@pytest.fixture(scope="module")
def rivers(micro_container, tmp_path_factory):
    path = tmp_path_factory.mktemp("rivers") / "rivers.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS))
    micro_container.datasets.add_file(path, "rivers")
    return "rivers"


def train(client, **body):
    base = {"model_id": "demo", "hook_name": "blocks.1.hook_resid_pre", "dataset_id": "rivers", "train_tokens": 4096}
    return client.post("/api/saes/train", json={**base, **body})


def test_train_a_tiny_sae_and_serve_its_dashboards(client, micro_workspace, rivers):
    r = train(client, architecture="topk", expansion=2, k=4, name="rivers-topk")
    assert r.status_code == 202, r.text
    body = r.json()
    names = [j["name"] for j in body["jobs"]]
    assert names == [
        "tokens.rivers.demo-64",
        "saes.cache.demo.rivers.blocks.1.hook_resid_pre",
        "saes.train.rivers-topk",
        "saes.eval.rivers-topk",
        "saes.dashboards.rivers-topk",
    ]
    assert all(j["status"] == "done" for j in body["jobs"]), [(j["name"], j["error"]) for j in body["jobs"]]
    assert all(j["params"]["sae_id"] == "rivers-topk" for j in body["jobs"])
    sae = client.get("/api/saes/rivers-topk").json()
    assert sae["source"] == "trained" and sae["dataset_id"] == "rivers" and sae["d_sae"] == 64 and sae["d_in"] == 32
    assert sae["dashboards"]["state"] == "ready"
    m = sae["metrics"]
    for k in ("fvu", "l0", "dead_fraction", "ce_loss_recovered"):
        assert math.isfinite(m[k]), (k, m[k])
    assert m["l0"] == pytest.approx(4) and 0 <= m["dead_fraction"] <= 1 and 0 < m["fvu"] < 1.5
    # the dataset plants nothing: a real model's targets (issue 17), not the demo world's
    assert {k: t["target"] for k, t in m["targets"].items()} == {
        "fvu": "<= 0.2",
        "dead_fraction": "<= 0.1",
        "ce_loss_recovered": ">= 0.8",
    }
    assert m["targets"]["fvu"]["met"] == (m["fvu"] <= 0.2)
    # held-out tokens of this dataset: the eval ran on the held-out split of its tokens
    tokens = json.loads((micro_workspace.artifact("tokens", "rivers", "demo-64") / "manifest.json").read_text())
    assert 0 < m["eval_tokens"] <= tokens["heldout"]["tokens"]
    cache = read_manifest(micro_workspace.artifact("activations", "demo", "datasets", "rivers", sae["hook_name"]))
    assert cache["config"]["first_position"] is False  # the attention sink is left out by default
    stored = micro_workspace.evals.list(kind="sae", limit=1)[0].results  # apart from the world's "saes" evals
    assert stored["saes"]["rivers-topk"]["fvu"] == m["fvu"]
    page = client.get("/api/saes/rivers-topk/features", params={"sort": "density", "order": "desc", "limit": 1}).json()
    top = page["features"][0]
    assert page["total"] == 64 and top["density"] > 0
    d = client.get(f"/api/saes/rivers-topk/features/{top['index']}").json()
    text = "".join(t["token"] for t in d["top_examples"][0]["tokens"])
    assert d["max_activation"] > 0 and any(w in text for w in ("river", "mill", "grain", "sacks", "water"))
    acts = client.post("/api/saes/rivers-topk/activations", json={"text": "The river flows", "top_k": 2})
    assert acts.status_code == 200 and len(acts.json()["tokens"]) > 1


def test_train_rejects_bad_requests_with_clear_4xx(client, rivers):
    cases = [
        ({"model_id": "nope"}, 404, "unknown model 'nope'"),
        ({"dataset_id": "nope"}, 404, "unknown dataset 'nope'"),
        ({"hook_name": "blocks.9.hook_resid_pre"}, 422, "blocks.0.hook_resid_pre"),
        ({"k": 500, "expansion": 2}, 422, "k must be between 1 and d_sae (64)"),
        ({"d_sae": 100}, 422, "a multiple of the hook's width 32"),
        ({"expansion": 65}, 422, "expansion"),
        ({"train_tokens": 10}, 422, "train_tokens"),
        ({"architecture": "gated"}, 422, "architecture"),
        ({"name": "bad id!"}, 422, "name must be"),
        ({"name": "demo-mlp0"}, 422, "already exists"),
    ]
    for patch, status, needle in cases:
        r = train(client, **patch)
        assert r.status_code == status, (patch, r.text)
        assert needle in r.json()["detail"], (patch, r.json())


def test_delete_an_sae(client, micro_container, micro_workspace, rivers):
    r = train(client, architecture="jumprelu", d_sae=64, k=8, name="rivers-jump")
    assert r.status_code == 202 and all(j["status"] == "done" for j in r.json()["jobs"]), r.text
    assert client.get("/api/saes/rivers-jump").json()["architecture"] == "jumprelu"
    client.put("/api/saes/rivers-jump/features/1/label", json={"label": "mine"})
    # while a job builds it: 409 naming the job
    job = micro_workspace.jobs.create("build", "saes.dashboards.rivers-jump")
    micro_container.saes.record_jobs("rivers-jump", [job.id])
    r = client.delete("/api/saes/rivers-jump")
    assert r.status_code == 409 and f"job {job.id}" in r.json()["detail"]
    micro_workspace.jobs.finish(job.id)
    assert client.delete("/api/saes/rivers-jump").status_code == 204
    assert client.get("/api/saes/rivers-jump").status_code == 404
    assert micro_workspace.saes.label("rivers-jump", 1) is None
    for d in ("saes", "dashboards"):
        assert not micro_workspace.artifact(d, "rivers-jump").exists()
    assert client.delete("/api/saes/rivers-jump").status_code == 404
    assert "rivers-jump" not in {s["id"] for s in client.get("/api/saes").json()["saes"]}


def test_failed_dashboards_show_the_error_and_can_be_retried(scratch, micro_workspace, tmp_path, monkeypatch):
    import loupe.services.saes.build as build

    client, c = scratch
    src = c.settings.resolved_sae_roots()[0] / "sae"
    shutil.copytree(micro_workspace.artifact("saes", "demo-resid1"), src)
    # the case: the first step of the chain fails (here: the dataset's documents are gone)
    path = tmp_path / "gone.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS[:8]))
    c.datasets.add_file(path, "gone")
    (c.datasets.dataset_dir("gone") / "documents.jsonl").unlink()
    r = client.post("/api/saes", json={"id": "ext-gone", "path": str(src), "dataset_id": "gone"})
    assert r.status_code == 202, r.text
    st = wait_until(lambda: (s := client.get("/api/saes/ext-gone").json()["dashboards"])["state"] == "failed" and s)
    assert st["job_name"] == "tokens.gone.demo-64" and "documents.jsonl" in st["message"]

    # a failing dashboard pass, then a retry that succeeds
    def boom(*args, **kwargs):
        raise RuntimeError("dashboard pass exploded")

    monkeypatch.setattr(build, "compute_dashboards", boom)
    r = client.post("/api/saes", json={"id": "ext", "path": str(src)})
    assert r.status_code == 202
    st = wait_until(lambda: (s := client.get("/api/saes/ext").json()["dashboards"])["state"] == "failed" and s)
    assert "dashboard pass exploded" in st["message"] and st["job_name"] == "saes.dashboards.ext"
    assert client.get("/api/jobs/" + str(st["job_id"])).json()["status"] == "failed"
    monkeypatch.undo()
    r = client.post("/api/saes/ext/dashboards")
    assert r.status_code == 202, r.text
    assert [j["name"] for j in r.json()["jobs"]] == ["saes.dashboards.ext"]  # the cache is kept
    wait_until(lambda: client.get("/api/saes/ext").json()["dashboards"]["state"] == "ready")
    assert client.get("/api/saes/ext/features/0").status_code == 200
    r = client.post("/api/saes/ext/dashboards")
    assert r.status_code == 409 and "nothing to retry" in r.json()["detail"]
    assert client.post("/api/saes/nope/dashboards").status_code == 404


def test_cancelling_a_job_of_the_training_chain(scratch, tmp_path):
    client, c = scratch
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS))
    c.datasets.add_file(path, "rivers-2")
    r = train(client, dataset_id="rivers-2", expansion=2, k=4, name="to-cancel")
    assert r.status_code == 202, r.text
    jobs = {j["name"]: j for j in r.json()["jobs"]}
    victim = jobs["saes.train.to-cancel"]
    assert victim["status"] == "queued"  # made at once, waiting for the cache
    assert client.delete(f"/api/jobs/{victim['id']}").status_code == 202
    for name in ("saes.train.to-cancel", "saes.eval.to-cancel", "saes.dashboards.to-cancel"):
        j = wait_until(
            lambda n=name: (j := client.get(f"/api/jobs/{jobs[n]['id']}").json())["status"] != "queued" and j
        )
        assert j["status"] == "failed" and j["progress"]["message"] in ("cancelled", "skipped"), j
    cache = jobs["saes.cache.demo.rivers-2.blocks.1.hook_resid_pre"]["id"]
    assert wait_until(lambda: client.get(f"/api/jobs/{cache}").json()["status"] == "done")  # the steps before go on
    st = client.get("/api/saes/to-cancel").json()["dashboards"]
    assert st["state"] == "failed" and "cancelled" in st["message"]
    r = client.post("/api/saes/to-cancel/dashboards")
    assert r.status_code == 409 and "never trained" in r.json()["detail"]
    r = client.delete("/api/datasets/rivers-2")
    assert r.status_code == 204  # nothing reads it any more
    assert client.delete("/api/saes/to-cancel").status_code == 204
