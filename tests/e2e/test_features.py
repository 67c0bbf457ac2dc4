"""The SAE feature browser in Chromium against the live micro-world server: the SAE list with
quality metrics, the feature table (sort, search, URL state), a feature page (histogram, shaded
examples, label edit), and the prompt inspector."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e


def _fmt_fvu(x: float) -> str:
    return f"{x:.3f}"


def test_features_page_lists_both_saes_with_metrics(page, live_server, client):
    # the page lists the SAEs of the model picked in the sidebar (the default); API tests may
    # have trained SAEs for other models on the same server
    default = client.get("/api/models").json()["default_id"]
    saes = {s["id"]: s for s in client.get("/api/saes", params={"model_id": default}).json()["saes"]}
    assert {"demo-mlp0", "demo-resid1"} <= set(saes)
    page.goto(live_server + "/")
    page.get_by_test_id("nav-features").click()
    expect(page).to_have_url(re.compile(r"/features$"))
    cards = page.get_by_test_id("sae-card")
    expect(cards).to_have_count(len(saes))
    for sid in ("demo-mlp0", "demo-resid1"):
        card = page.locator(f'[data-testid="sae-card"][data-sae-id="{sid}"]')
        expect(card).to_contain_text(saes[sid]["hook_name"])
        expect(card).to_contain_text(str(saes[sid]["d_sae"]))
        card.click()
        expect(page).to_have_url(re.compile(rf"sae={sid}"))
        m = saes[sid]["metrics"]
        expect(page.get_by_test_id("sae-metric-fvu")).to_contain_text(_fmt_fvu(m["fvu"]))
        expect(page.get_by_test_id("sae-metric-ce_loss_recovered")).to_contain_text(
            f"{m['ce_loss_recovered'] * 100:.1f}%"
        )
        quality = page.get_by_test_id("sae-quality")
        met = sum(t["met"] for t in m["targets"].values())
        expect(quality.get_by_test_id("target-met")).to_have_count(met)
        expect(quality.get_by_test_id("target-unmet")).to_have_count(len(m["targets"]) - met)
        rows = page.get_by_test_id("domain-auroc-row")
        expect(rows).to_have_count(len(m["domains"]))
        best = max(m["domains"].items(), key=lambda kv: kv[1]["auroc"])
        # rows are sorted by AUROC, the best domain first, linking to its feature
        expect(rows.first).to_have_attribute("data-domain", best[0])
        expect(rows.first.get_by_test_id("domain-feature-link")).to_have_attribute(
            "href", f"/features/{sid}/{best[1]['feature']}"
        )
        expect(page.get_by_test_id("feature-count")).to_contain_text(f"of {saes[sid]['d_sae']} features")


def test_feature_table_sorts_searches_and_keeps_state_in_the_url(page, live_server, client):
    page.goto(live_server + "/features?sae=demo-mlp0")
    rows = page.get_by_test_id("feature-row")
    expect(rows.first).to_have_attribute("data-index", "0")
    page.get_by_test_id("sort-density").click()
    expect(page).to_have_url(re.compile(r"sort=density&order=desc"))
    want = client.get("/api/saes/demo-mlp0/features", params={"sort": "density", "order": "desc", "limit": 2}).json()
    expect(rows.first).to_have_attribute("data-index", str(want["features"][0]["index"]))
    d0 = float(rows.nth(0).get_by_test_id("feature-density").get_attribute("data-value"))
    d1 = float(rows.nth(1).get_by_test_id("feature-density").get_attribute("data-value"))
    assert d0 >= d1 and d0 == pytest.approx(want["features"][0]["density"])

    # the domain and density filters go to the server as parameters
    dna = client.get("/api/saes/demo-mlp0/features", params={"domain": "dna", "limit": 1}).json()["total"]
    page.get_by_test_id("domain-filter").select_option("dna")
    expect(page).to_have_url(re.compile(r"domain=dna"))
    expect(page.get_by_test_id("feature-count")).to_have_text(f"{dna} of 256 features")
    page.get_by_test_id("domain-filter").select_option("")
    dense = client.get("/api/saes/demo-mlp0/features", params={"min_density": 0.35, "limit": 1}).json()["total"]
    page.get_by_test_id("density-min").fill("35")
    page.get_by_test_id("density-min").press("Enter")
    expect(page).to_have_url(re.compile(r"min=0\.35"))
    expect(page.get_by_test_id("feature-count")).to_have_text(f"{dense} of 256 features")
    page.get_by_test_id("filter-all").click()
    expect(page.get_by_test_id("feature-count")).to_have_text("256 of 256 features")

    # search: a token that occurs in some automatic labels, not all
    labels = [
        f["auto_label"] for f in client.get("/api/saes/demo-mlp0/features", params={"limit": 500}).json()["features"]
    ]
    q = next(
        t
        for lab in labels
        for t in lab.split()
        if len(t) >= 2 and t.isalnum() and 0 < sum(t.lower() in x.lower() for x in labels) < 40
    )
    hits = client.get(
        "/api/saes/demo-mlp0/features", params={"q": q, "sort": "density", "order": "desc", "limit": 500}
    ).json()
    page.get_by_test_id("feature-search").fill(q)
    expect(page.get_by_test_id("feature-count")).to_have_text(f"{hits['total']} of 256 features")
    expect(rows).to_have_count(min(hits["total"], 50))
    expect(rows.first).to_have_attribute("data-index", str(hits["features"][0]["index"]))
    for i in range(min(hits["total"], 5)):
        expect(rows.nth(i).get_by_test_id("feature-label")).to_contain_text(q, ignore_case=True)

    # the state survives a reload, and a row click opens that feature
    page.reload()
    expect(page.get_by_test_id("feature-search")).to_have_value(q)
    expect(page.get_by_test_id("feature-count")).to_have_text(f"{hits['total']} of 256 features")
    expect(page.locator('th[aria-sort="descending"]')).to_contain_text("density")
    first = hits["features"][0]["index"]
    rows.first.click()
    expect(page).to_have_url(re.compile(rf"/features/demo-mlp0/{first}$"))
    expect(page.get_by_test_id("feature-page")).to_have_attribute("data-index", str(first), timeout=20_000)


def test_feature_page_draws_examples_and_persists_a_label(page, live_server, client):
    sae = client.get("/api/saes/demo-mlp0").json()
    idx = sae["metrics"]["domains"]["dna"]["feature"]  # the best DNA detector fires often
    d = client.get(f"/api/saes/demo-mlp0/features/{idx}").json()
    assert d["top_examples"], "the DNA feature should have top examples"
    page.goto(live_server + f"/features/demo-mlp0/{idx}")
    expect(page.get_by_test_id("feature-title")).to_contain_text(f"#{idx}", timeout=20_000)
    expect(page.get_by_test_id("feature-histogram")).to_have_attribute("data-drawn", "true", timeout=20_000)
    examples = page.get_by_test_id("top-example")
    expect(examples).to_have_count(len(d["top_examples"]))
    first = examples.first
    n_active = sum(t["activation"] > 0 for t in d["top_examples"][0]["tokens"])
    expect(first.get_by_test_id("tok-active")).to_have_count(n_active)
    # the example's own token is outlined, shaded at full intensity for the top example
    center = first.locator(".tok-center")
    expect(center).to_have_count(1)
    assert center.get_attribute("data-tip").endswith(
        f"{d['top_examples'][0]['tokens'][d['top_examples'][0]['center']]['activation']:.3f}"
    )
    assert "rgba(255, 138, 20" in (center.get_attribute("style") or "")
    expect(page.get_by_test_id("logits-positive").locator("li")).to_have_count(len(d["summary"]["logits"]["top"]))
    expect(page.get_by_test_id("neighbour-link")).to_have_count(len(d["summary"]["neighbours"]))
    expect(page.get_by_test_id("auto-label")).to_have_text(d["auto_label"])

    label = f"DNA bases (e2e {idx})"
    page.get_by_test_id("label-input").fill(label)
    page.get_by_test_id("label-save").click()
    expect(page.get_by_test_id("label-saved")).to_be_visible()
    page.reload()
    expect(page.get_by_test_id("label-input")).to_have_value(label)
    expect(page.get_by_test_id("feature-display-label")).to_have_text(label)
    assert client.get(f"/api/saes/demo-mlp0/features/{idx}").json()["label"] == label
    # the table shows the person's label in bold
    page.goto(live_server + "/features?sae=demo-mlp0&q=e2e")
    expect(page.get_by_test_id("feature-row").locator("strong")).to_have_text(label)
    page.get_by_test_id("feature-row").first.click()
    page.get_by_test_id("next-feature").click()
    expect(page).to_have_url(re.compile(rf"/features/demo-mlp0/{idx + 1}$"))
    expect(page.get_by_test_id("feature-page")).to_have_attribute("data-index", str(idx + 1), timeout=20_000)
    client.put(f"/api/saes/demo-mlp0/features/{idx}/label", json={"label": ""})


def test_a_label_of_an_earlier_sae_version_is_shown_as_such(page, live_server, client):
    """A label written for an earlier version of the SAE (its weights changed since) is not the feature's
    label: the page shows the automatic label, and the old one muted, marked "from an earlier version";
    saving a label for the current version replaces it."""
    ws = client.app.state.container.ws
    version = client.get("/api/saes/demo-mlp0").json()["version"]
    idx = 11
    ws.saes.set_label("demo-mlp0", idx, "old meaning", version - 1)
    try:
        d = client.get(f"/api/saes/demo-mlp0/features/{idx}").json()
        assert d["label"] is None and d["stale_label"]["version"] == version - 1
        page.goto(live_server + f"/features/demo-mlp0/{idx}")
        stale = page.get_by_test_id("stale-label")
        expect(stale).to_contain_text("old meaning", timeout=20_000)
        expect(stale).to_contain_text("from an earlier version")
        expect(page.get_by_test_id("feature-display-label")).to_have_text(d["auto_label"])
        expect(page.get_by_test_id("label-input")).to_have_value("")
        page.goto(live_server + "/features?sae=demo-mlp0&q=old%20meaning")
        expect(page.get_by_test_id("feature-row").get_by_test_id("stale-label")).to_contain_text("old meaning")
        page.get_by_test_id("feature-row").first.click()
        page.get_by_test_id("label-input").fill("new meaning")
        page.get_by_test_id("label-save").click()
        expect(page.get_by_test_id("label-saved")).to_be_visible()
        expect(page.get_by_test_id("stale-label")).to_have_count(0)
        expect(page.get_by_test_id("feature-display-label")).to_have_text("new meaning")
        assert client.get(f"/api/saes/demo-mlp0/features/{idx}").json()["stale_label"] is None
    finally:
        client.put(f"/api/saes/demo-mlp0/features/{idx}/label", json={"label": ""})


def test_inspector_lists_a_tokens_features_and_links_to_dashboards(page, live_server, client):
    page.goto(live_server + "/")
    page.get_by_test_id("nav-inspect").click()
    page.get_by_test_id("inspect-preset-chat").click()
    text = page.get_by_test_id("inspect-input").input_value()
    want = client.post("/api/saes/demo-mlp0/activations", json={"text": text, "top_k": 8}).json()
    page.get_by_test_id("inspect-run").click()
    chips = page.get_by_test_id("inspect-token")
    expect(chips).to_have_count(len(want["tokens"]))
    p = next(i for i, t in enumerate(want["tokens"]) if i > 0 and t["features"])
    chips.nth(p).click()
    feats = page.get_by_test_id("token-feature")
    expect(feats).to_have_count(len(want["tokens"][p]["features"]))
    top = want["tokens"][p]["features"][0]
    expect(feats.first).to_have_attribute("data-index", str(top["index"]))
    expect(feats.first).to_contain_text(want["labels"][str(top["index"])])
    # the token's layer Jacobian, the same as the API gives for that position
    jac = client.post(
        "/api/jacobian/layer",
        json={
            "prompt": text,
            "position": p,
            "hook_in": "blocks.0.hook_resid_pre",
            "hook_out": "blocks.1.hook_resid_post",
            "n_directions": 5,
        },
    ).json()
    page.get_by_test_id("inspect-jacobian-run").click()
    panel = page.get_by_test_id("inspect-jacobian")
    expect(panel.get_by_test_id("jacobian-layer-result")).to_contain_text(f"[{p}]")
    rows = panel.get_by_test_id("jacobian-layer-directions").locator("tbody tr")
    expect(rows).to_have_count(len(jac["directions"]))
    expect(rows.first).to_contain_text(f"{jac['directions'][0]['sigma']:.3f}")
    page.screenshot(path="/tmp/e2e-inspect-jacobian.png", full_page=True)
    # shading by the token's top feature: every chip gets that feature's activation
    feats.first.get_by_test_id("token-feature-shade").click()
    expect(page.get_by_test_id("inspect-shaded-by")).to_contain_text(f"#{top['index']}")
    expect(chips.nth(p)).to_have_attribute("data-activation", re.compile(r"^\d"))
    assert float(chips.nth(p).get_attribute("data-activation")) == pytest.approx(top["activation"], abs=1e-3)
    feats.first.get_by_test_id("token-feature-link").click()
    expect(page).to_have_url(re.compile(rf"/features/demo-mlp0/{top['index']}$"))
    expect(page.get_by_test_id("feature-histogram")).to_have_attribute("data-drawn", "true", timeout=20_000)


def test_inspector_live_edit_of_a_tokens_feature_matches_the_api(page, live_server, client):
    """Edit this token: set the selected token's top feature to a large value; the after-table and the
    steered continuation are what POST /api/steering/next-token gives for the same edit."""
    page.goto(live_server + "/")
    page.get_by_test_id("nav-inspect").click()
    page.get_by_test_id("inspect-preset-chat").click()
    text = page.get_by_test_id("inspect-input").input_value()
    sae = next(s for s in client.get("/api/saes").json()["saes"] if s["id"] == "demo-mlp0")
    want = client.post("/api/saes/demo-mlp0/activations", json={"text": text, "top_k": 8}).json()
    page.get_by_test_id("inspect-run").click()
    chips = page.get_by_test_id("inspect-token")
    expect(chips).to_have_count(len(want["tokens"]))
    p = max(i for i, t in enumerate(want["tokens"]) if t["features"])  # the last token with an active feature
    feature = want["tokens"][p]["features"][0]["index"]
    chips.nth(p).click()
    panel = page.get_by_test_id("inspect-edit")
    expect(panel).to_contain_text(f"position {p}")
    expect(panel.get_by_test_id("inspect-edit-feature-select")).to_have_value(str(feature))
    expect(panel.get_by_test_id("inspect-edit-feature")).to_have_value(str(feature))
    panel.get_by_test_id("inspect-edit-op").select_option("set")
    panel.get_by_test_id("inspect-edit-value").fill("60")
    edit = {"kind": "edit", "sae_id": "demo-mlp0", "feature": feature, "position": p, "op": "set", "value": 60}
    api = client.post(
        "/api/steering/next-token",
        json={"prompt": text, "model_id": sae["model_id"], "interventions": [edit], "top_k": 8, "continue_tokens": 12},
    ).json()
    result = panel.get_by_test_id("inspect-edit-result")
    expect(result).to_have_attribute("data-edit", re.compile(r'"value":60[,}]'))
    after = panel.get_by_test_id("inspect-edit-after").get_by_test_id("inspect-edit-row")
    expect(after).to_have_count(len(api["steered"]))
    for i, t in enumerate(api["steered"]):
        expect(after.nth(i)).to_have_attribute("data-token-id", str(t["id"]))
        expect(after.nth(i)).to_contain_text(f"{t['prob']:.3f}")
    before = panel.get_by_test_id("inspect-edit-before").get_by_test_id("inspect-edit-row")
    expect(before.first).to_have_attribute("data-token-id", str(api["default"][0]["id"]))
    expect(panel.get_by_test_id("inspect-edit-steered-continuation")).to_have_text(api["steered_continuation"])
    expect(panel.get_by_test_id("inspect-edit-default-continuation")).to_have_text(api["default_continuation"])
    expect(panel.get_by_test_id("inspect-edit-kl")).to_have_text(f"{api['kl']:.4f}")
    assert api["kl"] > 0
    ms = int(panel.get_by_test_id("inspect-edit-ms").inner_text())
    print(f"inspector live edit round trip: {ms} ms")
    page.screenshot(path="/tmp/e2e-inspect-edit.png", full_page=True)
    # a feature the SAE does not have: the server's 422 is shown, not a stale result
    panel.get_by_test_id("inspect-edit-feature").fill(str(sae["d_sae"]))
    expect(panel.get_by_test_id("inspect-edit-error")).to_contain_text("outside")
    expect(result).to_have_count(0)
    # a neuron instead: the panel recovers
    panel.get_by_test_id("inspect-edit-target-neuron").click()
    expect(panel.get_by_test_id("inspect-edit-hook")).to_have_value(sae["hook_name"])
    panel.get_by_test_id("inspect-edit-neuron").fill("3")
    expect(result).to_have_attribute("data-edit", re.compile(r'"index":3'))


def test_activations_return_chosen_features_on_every_token(client):
    """The inspector's shading: `features` in the request -> that feature's activation on every
    token, equal to the top-k values wherever it is in a token's top k."""
    text = "ACGTTGCAAGCTTAG and some prose"
    body = client.post("/api/saes/demo-mlp0/activations", json={"text": text, "top_k": 4}).json()
    f = body["tokens"][1]["features"][0]["index"]
    again = client.post("/api/saes/demo-mlp0/activations", json={"text": text, "top_k": 4, "features": [f]}).json()
    acts = again["feature_activations"][str(f)]
    assert len(acts) == len(body["tokens"]) and str(f) in again["labels"]
    seen = 0
    for p, t in enumerate(body["tokens"]):
        for x in t["features"]:
            if x["index"] == f:
                assert acts[p] == pytest.approx(x["activation"], abs=1e-4)
                seen += 1
        if all(x["index"] != f for x in t["features"]) and len(t["features"]) == 4:
            assert acts[p] <= t["features"][-1]["activation"] + 1e-4  # not in the top 4 -> not above the 4th
    assert seen >= 1 and min(acts) >= 0
    r = client.post("/api/saes/demo-mlp0/activations", json={"text": text, "features": [10_000]})
    assert r.status_code == 404 and "no feature 10000" in r.json()["detail"]
    d = client.get(f"/api/saes/demo-mlp0/features/{f}").json()
    assert set(d["neighbour_labels"]) == {str(n) for n, _ in d["summary"]["neighbours"]}


def test_features_page_shows_dashboard_progress_until_ready(page, live_server):
    """While an SAE's dashboards are building the page shows the job's progress instead of the
    table, polls, and shows the table once they are ready (the API answer is faked, then real)."""
    import json

    def building(route):
        r = route.fetch()
        d = r.json()
        for s in d["saes"]:
            s["dashboards"] = {"state": "building", "job_id": 1, "progress": 0.4, "message": "dashboards 2/5"}
        route.fulfill(response=r, body=json.dumps(d))

    saes = re.compile(r".*/api/saes(\?.*)?$")  # the list, of the current model
    page.route(saes, building)
    page.goto(live_server + "/features?sae=demo-resid1")
    expect(page.get_by_test_id("dashboards-progress")).to_have_attribute("aria-valuenow", "40")
    expect(page.get_by_test_id("dashboards-status")).to_contain_text("dashboards 2/5")
    expect(page.get_by_test_id("feature-row")).to_have_count(0)
    page.unroute(saes)
    expect(page.get_by_test_id("feature-row").first).to_be_visible(timeout=10_000)
    expect(page.get_by_test_id("dashboards-status")).to_have_count(0)
