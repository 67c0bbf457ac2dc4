"""/api/saes on the micro world, whose build trains two SAEs and their dashboards. Dashboard
numbers are checked against the model and SAE run directly, not against the pipeline's own output."""

from __future__ import annotations

import pytest
import torch

from loupe.services.saes.training import load_sae
from loupe.storage.artifacts import load_tensors

SAES = ("demo-mlp0", "demo-resid1")


def test_list_has_both_saes_with_metrics_and_ready_dashboards(client):
    body = client.get("/api/saes").json()
    got = {s["id"]: s for s in body["saes"]}
    assert set(SAES) <= set(got)
    assert got["demo-mlp0"]["hook_name"] == "blocks.0.mlp.hook_post"
    assert got["demo-resid1"]["hook_name"] == "blocks.1.hook_resid_pre"
    for sid in SAES:
        s = got[sid]
        assert s["dashboards"]["state"] == "ready"
        m = s["metrics"]
        assert (
            0 <= m["fvu"] < 1
            and m["l0"] > 0
            and {"fvu", "l0", "dead_fraction", "ce_loss_recovered"} <= set(m["targets"])
        )
    assert client.get("/api/saes", params={"model_id": "nope"}).json()["saes"] == []


def test_feature_list_sorts_filters_and_pages(client):
    d_sae = client.get("/api/saes/demo-resid1").json()["d_sae"]
    page = client.get("/api/saes/demo-resid1/features", params={"sort": "density", "order": "desc", "limit": 20}).json()
    assert page["total"] == d_sae and len(page["features"]) == 20
    dens = [f["density"] for f in page["features"]]
    assert dens == sorted(dens, reverse=True) and dens[0] > 0
    nxt = client.get(
        "/api/saes/demo-resid1/features", params={"sort": "density", "order": "desc", "offset": 20, "limit": 5}
    ).json()
    assert nxt["features"][0]["density"] <= dens[-1]
    live = client.get("/api/saes/demo-resid1/features", params={"min_density": 1e-9, "limit": 500}).json()
    assert all(f["density"] > 0 for f in live["features"]) and live["total"] <= d_sae
    dom = page["features"][0]["top_domain"]
    by_dom = client.get("/api/saes/demo-resid1/features", params={"domain": dom, "limit": 500}).json()
    assert by_dom["total"] >= 1 and all(f["top_domain"] == dom for f in by_dom["features"])


@pytest.mark.parametrize("sae_id", SAES)
def test_dashboard_examples_match_a_direct_forward_pass(client, micro_workspace, sae_id):
    from loupe.services.models import load_bridge

    rec = micro_workspace.saes.get(sae_id)
    top = client.get(f"/api/saes/{sae_id}/features", params={"sort": "density", "order": "desc", "limit": 1}).json()
    index = top["features"][0]["index"]
    d = client.get(f"/api/saes/{sae_id}/features/{index}").json()
    assert d["index"] == index and d["max_activation"] > 0
    acts = [e["activation"] for e in d["top_examples"]]
    assert acts == sorted(acts, reverse=True) and abs(acts[0] - d["max_activation"]) < 1e-3
    assert sum(d["histogram"]["counts"]) > 0 and d["histogram"]["figure"]["data"][0]["type"] == "bar"
    shares = [b["share"] for b in d["intervals"]]
    assert abs(sum(shares) - 1) < 1e-3
    for b in d["intervals"]:
        for e in b["examples"]:
            assert b["low"] - 1e-3 <= e["activation"] <= b["high"] + 1e-3
    # recompute the top example from scratch: model forward over that training sequence, SAE encode
    bridge = load_bridge(str(micro_workspace.artifact("model")))[0]
    sae = load_sae(rec.path)
    ids = load_tensors(micro_workspace.artifact("tokens", "train.safetensors"))["input_ids"]
    ex = d["top_examples"][0]
    with torch.no_grad():
        _, cache = bridge.run_with_cache(ids[ex["seq"] : ex["seq"] + 1], names_filter=[rec.hook_name])
        codes = sae.encode(cache[rec.hook_name][0].float())[:, index]
    assert abs(float(codes[ex["pos"]]) - ex["activation"]) < 1e-3
    center = ex["tokens"][ex["center"]]
    assert center["id"] == int(ids[ex["seq"], ex["pos"]])
    assert abs(center["activation"] - ex["activation"]) < 2e-2 * max(1.0, ex["activation"])  # stored fp16
    # every token of the window carries its own activation of this feature
    start = ex["pos"] - ex["center"]
    for j, t in enumerate(ex["tokens"]):
        assert abs(t["activation"] - float(codes[start + j])) < 2e-2 * max(1.0, abs(float(codes[start + j])))
    s = d["summary"]
    assert len(s["neighbours"]) > 0 and all(-1 <= c <= 1 for _, c in s["neighbours"])
    assert len(s["logits"]["top"]) > 0 and s["logits"]["top"][0][2] >= s["logits"]["bottom"][0][2]


def test_activations_on_text_match_the_sae(client, micro_workspace):
    from loupe.services.models import load_bridge

    text = "User: How do I bake bread?\nAssistant:"
    body = client.post("/api/saes/demo-mlp0/activations", json={"text": text, "top_k": 3}).json()
    rec = micro_workspace.saes.get("demo-mlp0")
    bridge, tok = load_bridge(str(micro_workspace.artifact("model")))
    ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        _, cache = bridge.run_with_cache(torch.tensor([ids]), names_filter=[rec.hook_name])
        codes = load_sae(rec.path).encode(cache[rec.hook_name][0].float())
    assert [t["id"] for t in body["tokens"]] == ids
    for p, t in enumerate(body["tokens"]):
        want = codes[p].topk(3)
        got = {f["index"]: f["activation"] for f in t["features"]}
        for v, i in zip(want.values.tolist(), want.indices.tolist()):
            if v > 0:
                assert abs(got[i] - v) < 1e-3
    assert all(str(f["index"]) in body["labels"] for t in body["tokens"] for f in t["features"])


def test_labels_persist_and_are_searchable(client, micro_workspace):
    r = client.put("/api/saes/demo-mlp0/features/7/label", json={"label": "  bread and baking  "})
    assert r.status_code == 200 and r.json()["label"] == "bread and baking"
    assert client.get("/api/saes/demo-mlp0/features/7").json()["label"] == "bread and baking"
    hits = client.get("/api/saes/demo-mlp0/features", params={"q": "BAKING"}).json()
    assert [f["index"] for f in hits["features"]] == [7]
    # rebuilding the dashboard rows keeps people's labels
    rows = [
        {
            "index": f.index,
            "density": f.density,
            "max_activation": f.max_activation,
            "mean_activation": f.mean_activation,
            "capacity": f.capacity,
            "auto_label": f.auto_label,
            "top_domain": f.top_domain,
            "top_domain_share": f.top_domain_share,
            "summary": f.summary,
        }
        for f in (
            micro_workspace.saes.feature("demo-mlp0", i) for i in range(micro_workspace.saes.get("demo-mlp0").d_sae)
        )
    ]
    micro_workspace.saes.replace_features("demo-mlp0", rows)
    assert client.get("/api/saes/demo-mlp0/features/7").json()["label"] == "bread and baking"
    assert client.put("/api/saes/demo-mlp0/features/7/label", json={"label": ""}).json()["label"] is None
    assert client.get("/api/saes/demo-mlp0/features/7").json()["label"] is None


def test_neurons_polysemanticity(client, micro_workspace):
    body = client.get("/api/saes/demo-mlp0/neurons").json()
    d_mlp = micro_workspace.models.get("demo").config["d_mlp"]
    assert len(body["polysemanticity"]) == d_mlp and all(v >= 0 for v in body["polysemanticity"])
    assert body["most_polysemantic"][0][1] == max(body["polysemanticity"])


@pytest.mark.parametrize(
    "method,url,kwargs,status,needle",
    [
        ("get", "/api/saes/nope", {}, 404, "unknown SAE"),
        ("get", "/api/saes/demo-mlp0/features/100000", {}, 404, "no feature 100000"),
        ("get", "/api/saes/demo-mlp0/features/-1", {}, 422, "index: Input should be greater than or equal to 0"),
        ("get", "/api/saes/demo-mlp0/features?sort=bogus", {}, 422, "sort must be one of"),
        ("get", "/api/saes/demo-mlp0/features?limit=0", {}, 422, "limit"),
        ("put", "/api/saes/demo-mlp0/features/1/label", {"json": {"label": "x" * 201}}, 422, "label"),
        ("post", "/api/saes/demo-mlp0/activations", {"json": {"text": ""}}, 422, "text"),
        ("post", "/api/saes/demo-mlp0/activations", {"json": {"text": "a " * 400}}, 422, "context"),
        ("post", "/api/saes/demo-mlp0/activations", {"json": {"text": "hi", "top_k": 0}}, 422, "top_k"),
    ],
)
def test_bad_requests_get_clear_4xx(client, method, url, kwargs, status, needle):
    r = getattr(client, method)(url, **kwargs)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_an_sae_from_disk_registers_and_gets_the_same_dashboards(client, micro_workspace):
    import json
    import shutil
    import time

    imports = micro_workspace.settings.resolved_sae_roots()[0]  # POST /api/saes reads only under LOUPE_SAE_ROOTS
    src = imports / "my-sae"
    shutil.copytree(micro_workspace.saes.get("demo-resid1").path, src)
    r = client.post("/api/saes", json={"id": "disk-resid1", "path": str(src)})
    assert r.status_code == 202, r.text
    assert r.json()["source"] == "disk" and r.json()["hook_name"] == "blocks.1.hook_resid_pre"
    deadline = time.monotonic() + 180
    while client.get("/api/saes/disk-resid1").json()["dashboards"]["state"] != "ready":
        assert time.monotonic() < deadline, client.get("/api/saes/disk-resid1").json()
        time.sleep(0.5)
    # same weights, same cached activations: the same features fire on the same tokens
    a = client.get("/api/saes/demo-resid1/features/0").json()
    b = client.get("/api/saes/disk-resid1/features/0").json()
    assert [(e["seq"], e["pos"]) for e in a["top_examples"]] == [(e["seq"], e["pos"]) for e in b["top_examples"]]
    assert a["density"] == b["density"]
    assert client.post("/api/saes", json={"id": "disk-resid1", "path": str(src)}).status_code == 409
    # a directory without safetensors weights, and an SAE whose hook the model lacks, are refused
    pickled = imports / "pickled"
    pickled.mkdir()
    (pickled / "cfg.json").write_text((src / "cfg.json").read_text())
    (pickled / "sae_weights.pt").write_bytes(b"not loaded")
    r = client.post("/api/saes", json={"id": "p1", "path": str(pickled)})
    assert r.status_code == 422 and "safetensors" in r.json()["detail"]
    wrong = imports / "wrong-hook"
    shutil.copytree(src, wrong)
    cfg = json.loads((wrong / "cfg.json").read_text())
    cfg.setdefault("metadata", {})["hook_name"] = "blocks.9.hook_resid_pre"
    (wrong / "cfg.json").write_text(json.dumps(cfg))
    r = client.post("/api/saes", json={"id": "w1", "path": str(wrong)})
    assert r.status_code == 422 and "blocks.9.hook_resid_pre" in r.json()["detail"]
    assert client.post("/api/saes", json={"id": "x", "path": str(imports / "absent")}).status_code == 422
    assert client.post("/api/saes", json={"id": "bad id!", "path": str(src)}).status_code == 422
    assert {s["id"] for s in client.get("/api/saes").json()["saes"]} >= {"demo-mlp0", "demo-resid1", "disk-resid1"}


def test_stored_pages_equal_a_live_render(client, micro_workspace):
    """The build renders each feature's examples/intervals/histogram once; a page read back equals the
    same feature rendered from its arrays now (the path for dashboards built before pages existed)."""
    import orjson
    from safetensors import safe_open

    from loupe.services.saes.configs import DashboardConfig
    from loupe.services.saes.dashboards import vocab_strings
    from loupe.services.saes.pages import PAGE_ARRAYS, ROW_FIELDS, read_page, render_page
    from loupe.storage.artifacts import read_manifest

    rec = micro_workspace.saes.get("demo-mlp0")
    ddir = micro_workspace.artifact("dashboards", "demo-mlp0")
    manifest = read_manifest(ddir)
    assert manifest["pages"] is True
    cfg = DashboardConfig.from_dict(manifest["config"])
    vocab = vocab_strings(load_bridge_tokenizer(micro_workspace))
    for index in (0, 5, rec.d_sae - 1):
        f = micro_workspace.saes.feature("demo-mlp0", index)
        with safe_open(str(ddir / "features.safetensors"), "pt") as fh:
            arr = {k: fh.get_slice(k)[index : index + 1][0] for k in PAGE_ARRAYS}
        row = {**{k: getattr(f, k) for k in ROW_FIELDS}, "summary": f.summary}
        live = orjson.loads(
            render_page(row, {"sae_id": "demo-mlp0", "hook_name": rec.hook_name, "d_sae": rec.d_sae}, arr, cfg, vocab)
        )
        page, neighbours = read_page(ddir, index)
        assert orjson.loads(page) == live
        assert neighbours == [int(n[0]) for n in f.summary["neighbours"]]
        served = client.get(f"/api/saes/demo-mlp0/features/{index}").json()
        assert {k: served[k] for k in live} == live and served["index"] == index
        assert set(served["neighbour_labels"]) == {str(i) for i in neighbours}


def load_bridge_tokenizer(ws):
    from loupe.services.models import load_bridge

    return load_bridge(str(ws.artifact("model")))[1]
