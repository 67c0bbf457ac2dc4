"""What the API asks of an SAE's features: lists (sorted, filtered), one feature's page, people's
labels, the MLP neurons' polysemanticity, and feature activations on new text."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import torch
from safetensors import safe_open

from loupe.core.activations import cache_activations
from loupe.errors import Conflict, NotFound, Unprocessable
from loupe.services.ids import plain_text
from loupe.services.models import LoadedModel, ModelService
from loupe.services.saes.configs import DashboardConfig
from loupe.services.saes.dashboards import vocab_strings
from loupe.services.saes.pages import PAGE_ARRAYS, ROW_FIELDS, read_page, render_page, splice_json
from loupe.services.saes.registry import SAERegistry
from loupe.services.workspace import Workspace
from loupe.storage.models import SAERecord

SORTS = ("index", "density", "max_activation", "capacity", "top_domain_share")


class FeatureService:
    def __init__(self, ws: Workspace, models: ModelService, registry: SAERegistry):
        self.ws = ws
        self.models = models
        self.registry = registry
        self._vocab: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def _require_dashboards(self, rec: SAERecord) -> None:
        if not self.registry.dashboards_ready(rec):
            st = self.registry.status(rec)
            raise Conflict(
                f"the dashboards of {rec.id} are not built yet ({st['state']}: {st.get('message', '')}); "
                "see /api/jobs for progress"
            )

    def features(
        self,
        sae_id: str,
        sort: str = "index",
        order: str = "asc",
        offset: int = 0,
        limit: int = 50,
        q: str | None = None,
        domain: str | None = None,
        min_density: float | None = None,
        max_density: float | None = None,
    ) -> dict[str, Any]:
        if sort not in SORTS:
            raise Unprocessable(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
        if order not in ("asc", "desc"):
            raise Unprocessable(f"order must be asc or desc, not {order!r}")
        rec = self.registry.record(sae_id)
        self._require_dashboards(rec)
        total, rows = self.ws.saes.features(
            sae_id, sort, order == "desc", offset, limit, q, domain, min_density, max_density
        )
        version = rec.version or 1
        return {
            "sae_id": sae_id,
            "total": total,
            "offset": offset,
            "features": [{**{k: getattr(f, k) for k in ROW_FIELDS}, **_labels(lab, v, version)} for f, lab, v in rows],
        }

    def dashboard_json(self, sae_id: str, index: int) -> bytes:
        """One feature's dashboard as JSON bytes: the page the dashboard build rendered (everything but
        labels), after the person's label and the neighbours' labels read now."""
        rec = self.registry.record(sae_id)
        if not 0 <= index < rec.d_sae:
            raise NotFound(f"{sae_id} has features 0..{rec.d_sae - 1}; there is no feature {index}")
        self._require_dashboards(rec)
        manifest = self.registry.dashboard_manifest(rec) or {}
        ddir = self.registry.dashboard_dir(rec.id)
        if manifest.get("pages"):
            page, neighbours = read_page(ddir, index)
        else:  # dashboards built before pages were stored: render this feature now
            f = self.ws.saes.feature(sae_id, index)
            if f is None:
                raise NotFound(f"no dashboard row for feature {index} of {sae_id}")
            row = {**{k: getattr(f, k) for k in ROW_FIELDS}, "summary": f.summary}
            with safe_open(str(ddir / "features.safetensors"), "pt") as fh:
                arr = {k: fh.get_slice(k)[index : index + 1][0] for k in PAGE_ARRAYS}
            page = render_page(
                row,
                {"sae_id": sae_id, "hook_name": rec.hook_name, "d_sae": rec.d_sae},
                arr,
                DashboardConfig.from_dict(manifest.get("config", {})),
                self.token_strings(rec.model_id),
            )
            neighbours = [int(n[0]) for n in (f.summary or {}).get("neighbours", [])]
        version = rec.version or 1
        own, shown = self.ws.saes.labels_around(sae_id, index, neighbours, version)
        labels = _labels(own[0], own[1], version) if own else _labels(None, None, version)
        return splice_json(orjson.dumps({**labels, "neighbour_labels": {str(i): v for i, v in shown.items()}}), page)

    def set_label(self, sae_id: str, index: int, label: str) -> dict[str, Any]:
        rec = self.registry.record(sae_id)
        if not 0 <= index < rec.d_sae:
            raise NotFound(f"{sae_id} has features 0..{rec.d_sae - 1}; there is no feature {index}")
        label = plain_text(label.strip(), "a label", 200)
        version = rec.version or 1
        self.ws.saes.set_label(sae_id, index, label, version)
        return {"sae_id": sae_id, "index": index, "label": label or None, "version": version}

    def neurons(self, sae_id: str) -> dict[str, Any]:
        rec = self.registry.record(sae_id)
        self._require_dashboards(rec)
        path = self.registry.dashboard_dir(rec.id) / "features.safetensors"
        with safe_open(str(path), "pt") as fh:
            if "neuron_polysemanticity" not in fh.keys():
                raise NotFound(f"{sae_id} reads {rec.hook_name}, which has no MLP neurons to relate features to")
            pr = fh.get_tensor("neuron_polysemanticity")
        info = (rec.dashboards or {}).get("neurons", {})
        order = torch.argsort(pr, descending=True)
        return {
            "sae_id": sae_id,
            "units": info.get("units"),
            "polysemanticity": [round(float(v), 3) for v in pr],
            "most_polysemantic": [[int(i), round(float(pr[i]), 3)] for i in order[:20]],
            "mean": round(float(pr.mean()), 3),
        }

    def token_strings(self, model_id: str) -> list[str]:
        """Every token id's text, decoded once per model (a dashboard shows ~1,000 tokens; decoding
        each through the tokenizer was half of a request's time)."""
        with self._lock:
            if model_id not in self._vocab:
                self._vocab[model_id] = vocab_strings(self.models.get(model_id).tokenizer)
            return self._vocab[model_id]

    def activations(self, sae_id: str, text: str, top_k: int, features: list[int] | None = None) -> dict[str, Any]:
        rec = self.registry.record(sae_id)
        bad = [i for i in features or [] if not 0 <= i < rec.d_sae]
        if bad:
            raise NotFound(f"{sae_id} has features 0..{rec.d_sae - 1}; there is no feature {bad[0]}")
        if not text:
            raise Unprocessable("text is empty; give some text to run the model on")
        lm: LoadedModel = self.models.get(rec.model_id)
        ids = lm.encode_prompt(text)
        if len(ids) > lm.n_ctx:
            raise Unprocessable(f"the text is {len(ids)} tokens; the model's context is {lm.n_ctx}: shorten it")
        sae, _ = self.registry.load(sae_id)
        with lm.lock, torch.no_grad():
            acts = cache_activations(lm.bridge, torch.tensor([ids]), [rec.hook_name])[rec.hook_name][0]
            codes = sae.encode(acts.float().to(sae.device)).cpu()
        k = min(top_k, codes.shape[1])
        vals, idx = codes.topk(k, dim=1)
        labels: dict[int, None] = {}  # an ordered set
        tokens = []
        for p, t in enumerate(ids):
            feats: list[dict[str, Any]] = [
                {"index": int(i), "activation": round(float(v), 4)} for v, i in zip(vals[p], idx[p]) if v > 0
            ]
            for x in feats:
                labels.setdefault(x["index"], None)
            tokens.append({"token": lm.tokenizer.decode([t]), "id": t, "position": p, "features": feats})
        for i in features or []:
            labels.setdefault(i, None)
        return {
            "sae_id": sae_id,
            "hook_name": rec.hook_name,
            "tokens": tokens,
            "max_activation": round(float(codes.max()), 4) if codes.numel() else 0.0,
            "labels": self._labels(rec, list(labels)),
            "feature_activations": {str(i): [round(float(v), 4) for v in codes[:, i]] for i in features or []},
        }

    def _labels(self, rec: SAERecord, indices: list[int]) -> dict[str, str]:
        shown = self.ws.saes.display_labels(rec.id, indices, rec.version or 1)
        return {str(i): lab for i, lab in shown.items()}


def _labels(label: str | None, written_for: int | None, version: int) -> dict[str, Any]:
    """A feature's `label` (a person's, for the SAE's current version) and `stale_label` (one written
    for an earlier version: the index named another feature then, so it is not the feature's label)."""
    if label is None or written_for == version:
        return {"label": label, "stale_label": None}
    return {"label": None, "stale_label": {"label": label, "version": written_for, "stale": True}}
