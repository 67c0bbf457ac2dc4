"""/api/jacobian on the micro world: tiny training-Jacobian runs as jobs, keyed by settings; layer Jacobians."""

from __future__ import annotations

import time

import torch

from loupe.core import jacobian as jac

# 25 SGD steps of a 64 -> 3 -> 10 MLP: 235 parameters, a few seconds
TINY = {"seed": 0, "width": 3, "epochs": 1, "lr": 0.1, "experiments": True}


def _wait(client, job_id: int, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            assert job["status"] == "done", job["error"]
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout}s"
        time.sleep(0.2)


def _run(client, **settings) -> dict:
    r = client.post("/api/jacobian/runs", json={**TINY, **settings})
    assert r.status_code == 200, r.text
    started = r.json()
    if started["status"] != "done":
        _wait(client, started["job_id"])
    return started


def test_tiny_run_is_a_job_with_a_stored_spectrum(client):
    started = _run(client)
    out = client.get(f"/api/jacobian/runs/{started['run_id']}").json()
    p = jac.n_params(3)
    assert out["n_params"] == p == 235 and len(out["singular_values"]) == p == len(out["alignment"])
    s = out["singular_values"]
    assert all(a >= b for a, b in zip(s, s[1:]))
    counts = {k: v["count"] for k, v in out["regions"].items()}
    assert sum(counts.values()) == p
    assert out["regions"]["bulk"]["boundary"] == "|sigma - 1| < 0.1"
    assert counts["bulk"] == sum(abs(x - 1) < 0.1 for x in s)
    # the stored spectrum is the one the core computes for these settings
    res = jac.run(jac.TrainConfig(seed=0, width=3, epochs=1), chunk=p)
    torch.testing.assert_close(torch.tensor(s, dtype=torch.float64), res.spec.singular_values, rtol=1e-9, atol=1e-9)
    # experiments and figures
    rows = out["perturbation"]["rows"]
    assert {r["region"] for r in rows} >= {"random"} and all(r["kl_noise"] >= 0 for r in rows)
    assert {"spectrum", "alignment", "perturbation"} <= set(out["figures"])
    assert out["figures"]["spectrum"]["layout"]["yaxis"]["type"] == "log"
    listed = client.get("/api/jacobian/runs").json()
    assert any(r["run_id"] == started["run_id"] and r["status"] == "done" for r in listed["runs"])
    assert listed["defaults"]["width"] == 64


def test_same_settings_are_the_same_run(client):
    first = _run(client)
    n_jobs = len(client.get("/api/jobs", params={"kind": "jacobian"}).json()["jobs"])
    again = client.post("/api/jacobian/runs", json=TINY).json()
    assert again["run_id"] == first["run_id"] and again["existing"] and again["status"] == "done"
    assert len(client.get("/api/jobs", params={"kind": "jacobian"}).json()["jobs"]) == n_jobs
    other = client.post("/api/jacobian/runs", json={**TINY, "seed": 7, "experiments": False}).json()
    assert other["run_id"] != first["run_id"]
    _wait(client, other["job_id"])


def test_seed_overlap_and_controls_across_runs(client):
    a = _run(client)
    b = _run(client, seed=1)
    c = _run(client, control="shuffled_labels")
    out = client.get(f"/api/jacobian/runs/{a['run_id']}").json()
    ov = {r["seed"]: r for r in out["seed_overlap"]}
    assert 1 in ov and b["run_id"] in {r["run_id"] for r in out["seed_overlap"]}
    r = ov[1]
    assert 0 <= r["overlap"] <= 1 + 1e-9
    assert abs(r["baseline"] - max(r["k"], r["k_other"]) / 235) < 1e-12
    assert "control: shuffled_labels" in out["controls"] and c["run_id"]
    assert len(out["figures"]["spectrum"]["data"]) >= 2  # the control's spectrum is overlaid


def test_bad_settings_are_4xx_with_a_reason(client):
    r = client.post("/api/jacobian/runs", json={**TINY, "lr": 0})
    assert r.status_code == 422 and "lr: Input should be greater than 0" in r.json()["detail"]
    r = client.post("/api/jacobian/runs", json={**TINY, "lr": -0.5})
    assert r.status_code == 422
    r = client.post("/api/jacobian/runs", json={**TINY, "width": 256})
    assert r.status_code == 422
    assert "19,210 parameters" in r.json()["detail"] and "10,000" in r.json()["detail"]
    r = client.post("/api/jacobian/runs", json={**TINY, "control": "bogus"})
    assert r.status_code == 422
    assert client.get("/api/jacobian/runs/nope").status_code == 404


def test_layer_jacobian_endpoint(client):
    r = client.post(
        "/api/jacobian/layer",
        json={
            "prompt": "User: hello there\nAssistant:",
            "position": 2,
            "hook_in": "blocks.0.hook_resid_pre",
            "hook_out": "blocks.1.hook_resid_post",
        },
    )
    assert r.status_code == 200, r.text
    out = r.json()
    d = 32  # the micro world's d_model
    assert out["shape"] == [d, d] and len(out["singular_values"]) == d and out["position"] == 2
    s = out["singular_values"]
    assert all(a >= b - 1e-9 for a, b in zip(s, s[1:])) and s[0] > 0
    assert len(out["directions"][0]["top_tokens"]) == 8
    bad = client.post("/api/jacobian/layer", json={"prompt": "hi", "position": 50})
    assert bad.status_code == 422 and "outside the prompt" in bad.json()["detail"]
    bad = client.post("/api/jacobian/layer", json={"prompt": "hi", "hook_in": "blocks.9.nothing"})
    assert bad.status_code == 422 and "unknown hook" in bad.json()["detail"]
    reversed_pair = {"prompt": "hi", "hook_in": "blocks.1.hook_resid_post", "hook_out": "blocks.0.hook_resid_pre"}
    bad = client.post("/api/jacobian/layer", json=reversed_pair)
    assert bad.status_code == 422 and "swap hook_in and hook_out" in bad.json()["detail"]
    same = {"prompt": "hi", "hook_in": "blocks.0.hook_resid_pre", "hook_out": "blocks.0.hook_resid_pre"}
    bad = client.post("/api/jacobian/layer", json=same)
    assert bad.status_code == 422 and "the same hook" in bad.json()["detail"]


def test_layer_jacobian_matches_central_finite_differences(micro_app):
    """In float64 on a copy of the micro model: J v against (f(x + h v) - f(x - h v)) / 2h."""
    from loupe.core.layer_jacobian import jacobian
    from loupe.services.models import load_bridge

    svc = micro_app.state.container.layers
    lm = micro_app.state.container.models.get()
    models = micro_app.state.container.models
    bridge, _ = load_bridge(models.path(models.record(lm.id)))  # a private copy, in float64
    bridge = bridge.double()
    ids = torch.tensor([lm.encode_prompt("User: how do I bake bread?\nAssistant:")])
    p = 4
    for hook_in, hook_out in (
        ("blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"),
        ("blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"),
    ):
        with torch.no_grad():
            _, cache = bridge.run_with_cache(ids, names_filter=lambda n: n == hook_in)  # noqa: B023
        x0 = cache[hook_in][0, p].double()
        fn = svc._hooked(bridge, ids, p, hook_in, hook_out)
        J = jacobian(fn, x0)
        assert J.dtype == torch.float64 and J.shape[1] == x0.numel()
        g = torch.Generator().manual_seed(0)
        for _ in range(3):
            v = torch.randn(x0.numel(), generator=g, dtype=torch.float64)
            h = 1e-5
            with torch.no_grad():
                fd = (fn(x0 + h * v) - fn(x0 - h * v)) / (2 * h)
            assert ((J @ v - fd).norm() / fd.norm()).item() <= 1e-6


def test_the_build_computes_its_world_run_and_lists_it(client, micro_workspace):
    """The micro world's background build includes one training-Jacobian run (the demo world's is the
    paper setting); it is listed like a user's run and a second start finds it instead of recomputing."""
    from loupe.worlds.presets import JACOBIAN_RUNS

    s = JACOBIAN_RUNS["micro"]
    assert JACOBIAN_RUNS["demo"].n_params == 4810
    listed = {r["run_id"]: r for r in client.get("/api/jacobian/runs").json()["runs"]}
    assert listed[s.run_id]["status"] == "done" and listed[s.run_id]["settings"]["width"] == 4
    assert (micro_workspace.artifact("jacobian", s.run_id) / "manifest.json").exists()
    again = client.post("/api/jacobian/runs", json=s.to_dict()).json()
    assert again == {**again, "run_id": s.run_id, "status": "done", "existing": True}
    out = client.get(f"/api/jacobian/runs/{s.run_id}").json()
    assert out["n_params"] == jac.n_params(4) and len(out["singular_values"]) == out["n_params"]
