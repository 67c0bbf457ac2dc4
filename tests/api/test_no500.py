"""Issue 19, "no 500 for any input": each input that was a 500 is a 4xx that says why (or, where the input
is fine, an answer), and nothing it touched is lost."""

from __future__ import annotations

import json
import logging
import threading

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save

from tests.conftest import copy_of_micro, micro_settings, postgres_or_skip, postgres_schema

VID = "demo-refusal"
PROMPT = "User: How do I bake bread?\nAssistant:"


def _app(settings):
    from loupe.app import create_app
    from loupe.jobs.executors import InlineExecutor
    from loupe.worlds import open_world

    _, c = open_world(settings, executor=InlineExecutor())
    return c, create_app(container=c, background=False)


def _at_once(n, fn):
    """fn(i) in n threads released together; the results, in order."""
    start, out = threading.Barrier(n), [None] * n

    def run(i):
        start.wait()
        out[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


# -- vectors: import validates, a bad row or directory never takes the list down ---------------------------


def _vector_file(client, **meta):
    d = client.get("/api/models").json()["models"][0]["d_model"]
    return save({"r": torch.ones(d)}, metadata=meta)


OCTETS = {"Content-Type": "application/octet-stream"}  # what loupe.security lets a vector import send


@pytest.mark.parametrize("position", [str(2**70), str(2**63), str(2**40), "64", "-65", "abc", "1e3", "-1.5"])
def test_import_with_a_position_outside_the_context_is_422_and_writes_nothing(client, position):
    ws = client.app.state.container.ws
    before = client.get("/api/vectors").json()
    r = client.post(
        "/api/vectors/import",
        params={"name": "bad", "id": "bad-position"},
        content=_vector_file(client, position=position),
        headers=OCTETS,
    )
    assert r.status_code == 422, r.text
    assert "position" in r.json()["detail"]
    assert not ws.artifact("vectors", "bad-position").exists() and ws.vectors.get("bad-position") is None
    assert client.get("/api/vectors").json() == before
    assert client.get("/api/steering/evaluations").status_code == 200


def test_import_keeps_a_position_inside_the_context(client):
    r = client.post(
        "/api/vectors/import",
        params={"name": "ok", "id": "ok-position"},
        content=_vector_file(client, position="-3"),
        headers=OCTETS,
    )
    assert r.status_code == 201, r.text
    assert r.json()["position"] == -3
    assert client.delete("/api/vectors/ok-position").status_code == 204


@pytest.mark.parametrize(
    "tensors,meta,words",
    [
        ({"r": torch.tensor([float("nan")] * 32)}, {}, "non-finite"),
        ({"r": torch.ones(31)}, {}, "shape"),
        ({"r": torch.ones(32), "mu_minus": torch.ones(2, 32)}, {}, "shape"),
        ({"r": torch.ones(32)}, {"hook": "blocks.0.attn.hook_pattern"}, "residual"),
        ({"r": torch.ones(32)}, {"model_id": "no-such-model"}, "unknown model"),
    ],
)
def test_import_rejects_values_and_shapes_the_model_cannot_use(client, tensors, meta, words):
    assert client.get("/api/models").json()["models"][0]["d_model"] == 32
    r = client.post(
        "/api/vectors/import",
        params={"name": "bad", "id": "bad-values"},
        content=save(tensors, metadata=meta),
        headers=OCTETS,
    )
    assert r.status_code in (404, 422), r.text
    assert words in r.json()["detail"]
    assert client.app.state.container.ws.vectors.get("bad-values") is None


def test_a_bad_row_or_directory_is_left_out_with_a_warning_even_after_a_restart(micro_container, tmp_path, caplog):
    """Rows and directories an older version (or a hand) left behind: the list and a restart go on
    without them; asking for one by id says it is damaged (409)."""
    root = copy_of_micro(micro_container, tmp_path / "ws")
    c, app = _app(micro_settings(root))
    good = [v["id"] for v in c.vectors.list()]  # what other tests computed before this copy included
    assert VID in good
    fields = dict(model_id="demo", hook="blocks.1.hook_resid_pre", layer=1, d_model=32, source="import")
    c.ws.vectors.upsert("bad-scores", name="x", position=-1, path="/nowhere", scores=[1, 2], candidates={}, **fields)
    c.ws.vectors.upsert("bad-position", name="x", position=2**62, path="/nowhere", scores={}, candidates={}, **fields)
    d = c.ws.artifact("vectors", "bad-dir")
    d.mkdir(parents=True)
    (d / "vector.safetensors").write_bytes(save({"r": torch.ones(32)}))
    (d / "manifest.json").write_text(
        json.dumps({"id": "bad-dir", "hook": "blocks.1.hook_resid_pre", "position": str(2**70)})
    )
    c.close()

    with caplog.at_level(logging.WARNING, logger="loupe.vectors"):
        c, app = _app(micro_settings(root))  # the restart: restore() meets the bad directory
        with TestClient(app) as client:
            r = client.get("/api/vectors")
            assert r.status_code == 200, r.text
            assert [v["id"] for v in r.json()["vectors"]] == good
            assert client.get("/api/vectors/bad-scores").status_code == 409
            assert client.get("/api/steering/evaluations").status_code == 200
            # the good vector still steers
            iv = [{"kind": "add_direction", "vector_id": VID, "alpha": 1.0}]
            assert (
                client.post(
                    "/api/generate", json={"prompt": PROMPT, "max_new_tokens": 2, "interventions": iv}
                ).status_code
                == 200
            )
        c.close()
    said = caplog.text
    assert "bad-dir" in said and "bad-scores" in said and "bad-position" in said


# -- labels: concurrent PUTs of one label, control characters ---------------------------------------------------


def _label_races(client, sae_id):
    for index in range(3):
        labels = [f"feature {index}, writer {i}" for i in range(8)]
        codes = _at_once(
            8,
            lambda i, index=index, labels=labels: (
                client.put(f"/api/saes/{sae_id}/features/{index}/label", json={"label": labels[i]}).status_code
            ),
        )
        assert codes == [200] * 8
        assert client.app.state.container.ws.saes.label(sae_id, index) in labels
        assert client.put(f"/api/saes/{sae_id}/features/{index}/label", json={"label": ""}).status_code == 200


@pytest.mark.parametrize("label", ["a\x00b", "two\nlines", "tab\there", "\x7f"])
def test_a_label_with_a_control_character_is_422_and_keeps_the_old_one(client, label):
    sae_id = client.get("/api/saes").json()["saes"][0]["id"]
    url = f"/api/saes/{sae_id}/features/7/label"
    assert client.put(url, json={"label": "kept"}).status_code == 200
    r = client.put(url, json={"label": label})
    assert r.status_code == 422 and "control character" in r.json()["detail"]
    assert client.app.state.container.ws.saes.label(sae_id, 7) == "kept"
    assert client.put(url, json={"label": ""}).status_code == 200


def test_concurrent_puts_of_one_label_all_succeed_on_sqlite(client):
    _label_races(client, client.get("/api/saes").json()["saes"][0]["id"])


@pytest.mark.postgres
def test_concurrent_puts_and_a_nul_label_on_postgresql(micro_container, tmp_path):
    """PostgreSQL cannot store NUL in text (that was a DataError, a 500) and had the same race."""
    with postgres_schema(postgres_or_skip()) as url:
        c, app = _app(micro_settings(tmp_path / "ws", database_url=url))
        try:
            assert c.ws.db.dialect == "postgresql"
            sae = micro_container.ws.saes.get(micro_container.saes.records()[0].id)
            c.ws.saes.upsert(
                sae.id,
                **{
                    k: getattr(sae, k)
                    for k in ("model_id", "hook_name", "architecture", "d_in", "d_sae", "source", "path")
                },
            )
            with TestClient(app) as client:
                _label_races(client, sae.id)
                r = client.put(f"/api/saes/{sae.id}/features/1/label", json={"label": "nul\x00"})
                assert r.status_code == 422, r.text
                assert c.ws.saes.label(sae.id, 1) is None  # the races' labels were cleared; NUL wrote nothing
        finally:
            c.close()


# -- generate: seeds, temperatures, magnitudes; a failure after the stream started ---------------------------


@pytest.mark.parametrize(
    "extra,field",
    [
        ({"seed": 2**70, "temperature": 1.0}, "seed"),
        ({"seed": -1, "temperature": 1.0}, "seed"),
        ({"temperature": 1e30}, "temperature"),
        ({"max_new_tokens": 2**40}, "max_new_tokens"),
        ({"interventions": [{"kind": "add_direction", "vector_id": VID, "alpha": 1e30}]}, "alpha"),
        ({"interventions": [{"kind": "ace", "vector_id": VID, "alpha": -1e30}]}, "alpha"),
        (
            {
                "interventions": [
                    {"kind": "edit", "hook": "blocks.0.mlp.hook_post", "index": 0, "op": "scale", "value": 1e30}
                ]
            },
            "value",
        ),
        (
            {"interventions": [{"kind": "edit", "hook": "blocks.0.mlp.hook_post", "index": 2**70, "op": "zero"}]},
            "index",
        ),
        (
            {
                "interventions": [
                    {"kind": "edit", "hook": "blocks.0.mlp.hook_post", "index": 0, "position": 2**63, "op": "zero"}
                ]
            },
            "position",
        ),
    ],
)
@pytest.mark.parametrize("path", ["/api/generate", "/api/generate/stream"])
def test_out_of_bounds_numbers_are_422_before_anything_runs(client, path, extra, field):
    r = client.post(path, json={"prompt": PROMPT, "max_new_tokens": 4, **extra})
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]


def test_a_tiny_temperature_samples_the_greedy_token(client):
    """5e-324 overflowed logits / temperature to inf and softmax to NaN (a 500); with the max taken out
    first it is the greedy choice."""
    greedy = client.post("/api/generate", json={"prompt": PROMPT, "max_new_tokens": 8}).json()["default"]
    for t in (5e-324, 1e-300):
        r = client.post(
            "/api/generate", json={"prompt": PROMPT, "max_new_tokens": 8, "temperature": t, "seed": 2**32 - 1}
        )
        assert r.status_code == 200, r.text
        assert r.json()["default"] == greedy


def test_the_largest_allowed_magnitudes_still_answer(client):
    from loupe.api.bounds import MAX_MAGNITUDE, MAX_TEMPERATURE

    for iv in (
        {"kind": "add_direction", "vector_id": VID, "alpha": MAX_MAGNITUDE},
        {"kind": "ace", "vector_id": VID, "alpha": -MAX_MAGNITUDE},
        {"kind": "edit", "hook": "blocks.0.mlp.hook_post", "index": 0, "op": "scale", "value": MAX_MAGNITUDE},
    ):
        body = {"prompt": PROMPT, "max_new_tokens": 3, "temperature": MAX_TEMPERATURE, "seed": 1, "interventions": [iv]}
        assert client.post("/api/generate", json=body).status_code == 200
        assert (
            client.post("/api/steering/next-token", json={"prompt": PROMPT, "interventions": [iv]}).status_code == 200
        )


def _stream_events(client, body):
    with client.stream("POST", "/api/generate/stream", json=body) as r:
        assert r.status_code == 200
        return [json.loads(line) for line in r.iter_lines() if line]


def test_a_failure_after_the_stream_started_ends_it_with_an_error_event(client, monkeypatch):
    import loupe.services.generation as generation

    real = generation.decode_iter

    def breaks_after_two(*args, **kwargs):
        it = real(*args, **kwargs)
        yield next(it)
        yield next(it)
        raise RuntimeError("the model went away")

    monkeypatch.setattr(generation, "decode_iter", breaks_after_two)
    events = _stream_events(client, {"prompt": PROMPT, "max_new_tokens": 6})
    assert [e["event"] for e in events] == ["start", "token", "token", "error"]
    assert events[-1]["status"] == 500 and "failed" in events[-1]["detail"]


def test_nan_logits_are_422_and_an_error_event_in_the_stream(client, monkeypatch):
    """Activations pushed past float range give NaN logits: torch.multinomial raised (a 500, or a cut
    stream); now the request says to lower the interventions."""
    import loupe.services.generation as generation

    real = generation.decoding_forward

    def nan_forward(lm, plan=None):
        forward = real(lm, plan)
        return lambda ids: forward(ids) * float("nan")

    monkeypatch.setattr(generation, "decoding_forward", nan_forward)
    r = client.post("/api/generate", json={"prompt": PROMPT, "max_new_tokens": 4, "temperature": 1.0})
    assert r.status_code == 422 and "not finite" in r.json()["detail"]
    events = _stream_events(client, {"prompt": PROMPT, "max_new_tokens": 4, "temperature": 1.0})
    assert [e["event"] for e in events] == ["start", "error"]
    assert events[-1]["status"] == 422 and "lower them" in events[-1]["detail"]


# -- layer Jacobians over every hook name /api/models lists ----------------------------------------------------


def test_every_listed_hook_is_a_layer_jacobian_or_a_422_that_says_why(client):
    """Each hook /api/models lists, as hook_in and as hook_out, paired the wrong way round with the first
    (hook_embed) or last (hook_unembed) hook: one the Jacobian can use passes every check up to the order
    of the two ("swap"), one it cannot use says why; none is a 500 (34 of them were)."""
    model = client.get("/api/models").json()["models"][0]
    first, last = "hook_embed", "hook_unembed"
    said: dict[tuple[str, str], str] = {}
    for hook in model["hook_names"]:
        for hook_in, hook_out in ((hook, first), (last, hook)):
            body = {"prompt": "hello there", "hook_in": hook_in, "hook_out": hook_out, "n_directions": 1}
            r = client.post("/api/jacobian/layer", json=body)
            assert r.status_code in (200, 422), (hook_in, hook_out, r.text)
            said[hook_in, hook_out] = "answered" if r.status_code == 200 else r.json()["detail"]
    reasons = ("not computed in a forward pass", "per-position shape", "swap hook_in and hook_out", "same hook")
    assert all(any(w in why for w in reasons) for why in said.values() if why != "answered"), said
    assert "not computed in a forward pass" in said["blocks.0.hook_mlp_in", first]
    assert "not computed in a forward pass" in said[last, "blocks.0.attn.hook_q_input"]
    assert "per-position shape" in said["blocks.0.attn.hook_pattern", first]
    assert "per-position shape" in said[last, "blocks.1.attn.hook_attn_scores"]
    assert "swap hook_in and hook_out" in said["blocks.1.mlp.hook_post", first]
    assert "swap hook_in and hook_out" in said[last, "blocks.0.hook_resid_pre"]
    n = model["n_layers"]
    for hook_in, hook_out in (
        ("blocks.0.hook_resid_pre", "blocks.0.mlp.hook_post"),
        ("blocks.0.attn.hook_out", f"blocks.{n - 1}.hook_resid_post"),
        ("hook_embed", "blocks.0.hook_resid_pre"),
    ):
        r = client.post("/api/jacobian/layer", json={"prompt": "hello there", "hook_in": hook_in, "hook_out": hook_out})
        assert r.status_code == 200, r.text


# -- ids, indices and offsets past the database's integers ---------------------------------------------------


@pytest.mark.parametrize("big", [2**31, 2**63, 2**64, 2**100])
def test_ids_indices_and_offsets_past_the_integer_columns_are_422(client, big):
    sae_id = client.get("/api/saes").json()["saes"][0]["id"]
    for method, url in (
        ("GET", f"/api/jobs/{big}"),
        ("DELETE", f"/api/jobs/{big}"),
        ("GET", f"/api/steering/evaluations/{big}"),
        ("GET", f"/api/saes/{sae_id}/features/{big}"),
        ("PUT", f"/api/saes/{sae_id}/features/{big}/label"),
        ("GET", f"/api/saes/{sae_id}/features?offset={big}"),
        ("GET", f"/api/jobs?limit={big}"),
    ):
        r = client.request(method, url, json={"label": "x"} if method == "PUT" else None)
        assert r.status_code == 422, (url, r.text)
        assert r.json()["errors"][0]["type"] == "less_than_equal"


def test_ids_in_range_that_name_nothing_are_404(client):
    assert client.get(f"/api/jobs/{2**31 - 1}").status_code == 404
    assert client.delete(f"/api/jobs/{2**31 - 1}").status_code == 404
    assert client.get(f"/api/steering/evaluations/{2**31 - 1}").status_code == 404
    sae = client.get("/api/saes").json()["saes"][0]
    assert client.get(f"/api/saes/{sae['id']}/features/{sae['d_sae']}").status_code == 404
    page = client.get(f"/api/saes/{sae['id']}/features", params={"offset": 2**20}).json()
    assert page["features"] == [] and page["total"] == sae["d_sae"]
