"""Labels follow the SAE's version, not only the feature index: after a retrain under the same id (new
weights), a label written for the earlier weights is returned as `stale_label` with the version it was
written for (never as the feature's `label`), and saving a label writes it for the current version.
Identical weights (a rebuild that trains the same SAE) keep the version and the labels current. Runs on
a copy of the micro workspace."""

from __future__ import annotations

import shutil
from contextlib import contextmanager

import torch
from safetensors.torch import load_file, save_file

from loupe.services.saes.training import WEIGHTS_DIGEST, WEIGHTS_FILE
from loupe.storage.artifacts import atomic_dir, file_digest, read_manifest, write_manifest

SID = "demo-resid1"


@contextmanager
def served(workspace):
    """A client on `workspace`, opened as a server opens it."""
    from fastapi.testclient import TestClient

    from loupe.app import create_app
    from loupe.worlds import open_world
    from tests.conftest import micro_settings

    _, c = open_world(micro_settings(workspace))
    try:
        with TestClient(create_app(container=c, background=False)) as client:
            yield client, c
    finally:
        c.close()


def retrain(sae_dir, perturb: bool) -> None:
    """Replace the SAE's directory as a retrain does: new weights (or the same ones), a new manifest."""
    weights = load_file(str(sae_dir / WEIGHTS_FILE))
    if perturb:
        g = torch.Generator().manual_seed(1)
        weights = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in weights.items()}
    m = read_manifest(sae_dir)
    with atomic_dir(sae_dir) as tmp:
        for f in sae_dir.iterdir():
            if f.name not in (WEIGHTS_FILE, "manifest.json"):
                shutil.copy2(f, tmp / f.name)
        save_file(weights, str(tmp / WEIGHTS_FILE))
        write_manifest(tmp, {**m, WEIGHTS_DIGEST: file_digest(tmp / WEIGHTS_FILE)})


def test_labels_of_an_earlier_version_are_flagged_stale(micro_workspace, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(micro_workspace.settings.workspace, ws)
    with served(ws) as (client, c):
        v1 = client.get(f"/api/saes/{SID}").json()["version"]
        r = client.put(f"/api/saes/{SID}/features/3/label", json={"label": "rivers"})
        assert r.status_code == 200 and r.json() == {"sae_id": SID, "index": 3, "label": "rivers", "version": v1}
        page = client.get(f"/api/saes/{SID}/features/3").json()
        assert page["label"] == "rivers" and page["stale_label"] is None
        sae_dir = c.saes.sae_dir(SID)

    retrain(sae_dir, perturb=False)  # the same weights again: the same version, labels stay
    with served(ws) as (client, _):
        assert client.get(f"/api/saes/{SID}").json()["version"] == v1
        assert client.get(f"/api/saes/{SID}/features/3").json()["label"] == "rivers"

    retrain(sae_dir, perturb=True)  # new weights under the same id
    with served(ws) as (client, _):
        assert client.get(f"/api/saes/{SID}").json()["version"] == v1 + 1
        page = client.get(f"/api/saes/{SID}/features/3").json()
        assert page["label"] is None
        assert page["stale_label"] == {"label": "rivers", "version": v1, "stale": True}
        rows = client.get(f"/api/saes/{SID}/features", params={"offset": 3, "limit": 1}).json()["features"]
        assert rows[0]["index"] == 3 and rows[0]["label"] is None
        assert rows[0]["stale_label"] == {"label": "rivers", "version": v1, "stale": True}
        # a neighbour's label and the activations' labels show the automatic label instead of a stale one
        acts = client.post(f"/api/saes/{SID}/activations", json={"text": "a river", "features": [3]}).json()
        assert acts["labels"]["3"] == page["auto_label"]
        # labelling it again writes the label for the current version
        r = client.put(f"/api/saes/{SID}/features/3/label", json={"label": "streams"})
        assert r.json()["version"] == v1 + 1
        page = client.get(f"/api/saes/{SID}/features/3").json()
        assert page["label"] == "streams" and page["stale_label"] is None
