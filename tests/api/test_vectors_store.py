"""The vector store across re-imports and moves: importing a vector again under the same id (or after a
delete) serves the new one at once, not a cached old copy; rows hold paths relative to the workspace,
so a workspace copied to another directory (the old one gone) still loads its vectors (and its model,
whose row an older version wrote with an absolute path)."""

from __future__ import annotations

import shutil
import sqlite3

import torch
from safetensors.torch import load, save

VID = "demo-reimported"


def _import(client, r: torch.Tensor):
    return client.post(
        f"/api/vectors/import?name=reimported&id={VID}",
        content=save({"r": r}),
        headers={"Content-Type": "application/octet-stream"},
    )


def _exported(client) -> torch.Tensor:
    res = client.get(f"/api/vectors/{VID}/export")
    assert res.status_code == 200, res.text
    return load(res.content)["r"]


def _steered(client) -> str:
    body = {
        "prompt": "User: tell me about rivers\nAssistant:",
        "max_new_tokens": 6,
        "interventions": [{"kind": "add_direction", "vector_id": VID, "alpha": 1.0}],
    }
    res = client.post("/api/generate", json=body)
    assert res.status_code == 200, res.text
    return res.json()["steered"]["completion"]


def test_reimport_under_the_same_id_serves_the_new_vector(client, micro_container):
    d = int(micro_container.models.get().info["d_model"])
    g = torch.Generator().manual_seed(7)
    first, second, third = (torch.randn(d, generator=g) * 40 for _ in range(3))
    assert _import(client, first).status_code == 201
    assert torch.equal(_exported(client), first)
    a = _steered(client)  # loads (and caches) the first vector
    assert _import(client, second).status_code == 201
    assert torch.equal(_exported(client), second)
    b = _steered(client)
    assert a != b  # steering follows the new direction
    assert client.delete(f"/api/vectors/{VID}").status_code == 204
    assert client.get(f"/api/vectors/{VID}/export").status_code == 404
    assert _import(client, third).status_code == 201
    assert torch.equal(_exported(client), third)
    # a row's path is relative to the workspace
    assert micro_container.ws.vectors.get(VID).path == f"artifacts/vectors/{VID}/vector.safetensors"
    assert client.delete(f"/api/vectors/{VID}").status_code == 204


def test_a_copied_workspace_loads_its_vectors_with_the_original_gone(micro_workspace, tmp_path):
    from fastapi.testclient import TestClient

    from loupe.app import create_app
    from loupe.worlds import open_world
    from tests.conftest import micro_settings

    src = tmp_path / "first"
    shutil.copytree(micro_workspace.settings.workspace, src)
    file = src / "artifacts" / "vectors" / "demo-refusal" / "vector.safetensors"
    expected = load(file.read_bytes())["r"]
    # as a workspace written before paths were relative: an absolute path, the schema before revision 0006
    with sqlite3.connect(src / "loupe.db") as db:
        db.execute("update vectors set path = ? where id = 'demo-refusal'", (str(file.resolve()),))
        db.execute("update models set path = ? where id = 'demo'", (str((src / "artifacts" / "model").resolve()),))
        db.execute("update alembic_version set version_num = '0005'")
    moved = tmp_path / "second"
    shutil.copytree(src, moved)
    shutil.rmtree(src)  # nothing is left at the old place
    _, c = open_world(micro_settings(moved))
    try:
        assert c.ws.vectors.get("demo-refusal").path == "artifacts/vectors/demo-refusal/vector.safetensors"
        assert torch.equal(c.vectors.load("demo-refusal").r.float(), expected)
        with TestClient(create_app(container=c, background=False)) as client:
            res = client.get("/api/vectors/demo-refusal/export")
            assert res.status_code == 200, res.text
            assert torch.equal(load(res.content)["r"], expected)
            # the model, registered by an absolute path into the old place, loads from the new one
            assert client.get("/api/models/demo").json()["path"] == str(moved / "artifacts" / "model")
            body = {"prompt": "User: hi\nAssistant:", "max_new_tokens": 3}
            steer = [{"kind": "add_direction", "vector_id": "demo-refusal", "alpha": 4.0}]
            res = client.post("/api/generate", json={**body, "interventions": steer})
            assert res.status_code == 200, res.text
    finally:
        c.close()
