"""What the API asks of SAEs: the registry, feature lists, one feature's dashboard, labels,
feature activations on new text, and registering an SAE from disk or sae-lens's registry."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import torch
from safetensors import safe_open

from loupe.errors import Conflict, NotFound, Unprocessable
from loupe.services.models import LoadedModel, ModelService
from loupe.services.sae_features import (
    PAGE_ARRAYS,
    ROW_FIELDS,
    DashboardConfig,
    read_page,
    render_page,
    splice_json,
    vocab_strings,
)
from loupe.services.workspace import Workspace
from loupe.storage.artifacts import read_manifest
from loupe.storage.models import SAEFeature, SAERecord

SORTS = ("index", "density", "max_activation", "capacity", "top_domain_share")


class SAEService:
    def __init__(self, ws: Workspace, models: ModelService):
        self.ws = ws
        self.models = models
        self._saes: dict[str, Any] = {}
        self._vocab: dict[str, list[str]] = {}
        self._manifests: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    # -- registry --------------------------------------------------------------------------
    def record(self, sae_id: str) -> SAERecord:
        rec = self.ws.saes.get(sae_id)
        if rec is None:
            known = (
                ", ".join(r.id for r in self.ws.saes.list())
                or "none yet (the build trains them in the background; see /api/jobs)"
            )
            raise NotFound(f"unknown SAE {sae_id!r}; registered SAEs: {known}")
        return rec

    # Files are found from the workspace, not from paths stored in rows, so a workspace can move
    # (another mount point, a copied volume) without breaking its SAEs.
    def sae_dir(self, rec: SAERecord) -> Path:
        return self.ws.artifact("saes", rec.id)

    def dashboard_dir(self, rec: SAERecord) -> Path:
        return self.ws.artifact("dashboards", rec.id)

    def dashboard_manifest(self, rec: SAERecord) -> dict[str, Any] | None:
        """The dashboards' manifest when it matches the row's key (cached: read once per build)."""
        want = (rec.dashboards or {}).get("key")
        hit = self._manifests.get(rec.id)
        if hit is not None and hit.get("key") == want:
            return hit
        m = read_manifest(self.dashboard_dir(rec))
        if m is None or m.get("key") != want:
            return None
        self._manifests[rec.id] = m
        return m

    def dashboards_ready(self, rec: SAERecord) -> bool:
        return self.dashboard_manifest(rec) is not None

    def status(self, rec: SAERecord) -> dict[str, Any]:
        """Whether dashboards exist, else the progress of the job building them."""
        if self.dashboards_ready(rec):
            return {"state": "ready"}
        name = f"saes.dashboards.{rec.id.split('-', 1)[-1]}" if rec.source == "demo" else f"saes.dashboards.{rec.id}"
        job = self.ws.jobs.latest(name)
        if job is None:
            return {"state": "pending", "message": "dashboards are queued behind the SAE's training and evaluation"}
        return {
            "state": "failed" if job.status == "failed" else "building",
            "job_id": job.id,
            "progress": None if not job.progress_total else job.progress_done / job.progress_total,
            "message": job.error.splitlines()[0] if job.status == "failed" and job.error else job.message,
        }

    def describe(self, rec: SAERecord) -> dict[str, Any]:
        return {
            "id": rec.id,
            "model_id": rec.model_id,
            "hook_name": rec.hook_name,
            "architecture": rec.architecture,
            "d_in": rec.d_in,
            "d_sae": rec.d_sae,
            "source": rec.source,
            "path": str(self.sae_dir(rec)),
            "metrics": rec.metrics or {},
            "dashboards": self.status(rec),
        }

    def list(self, model_id: str | None = None) -> list[dict[str, Any]]:
        return [self.describe(r) for r in self.ws.saes.list(model_id)]

    def register(
        self,
        sae_id: str,
        model_id: str | None,
        path: str | None = None,
        release: str | None = None,
        hub_sae_id: str | None = None,
        background: bool = True,
    ) -> dict[str, Any]:
        """Register an SAE from disk or sae-lens's registry and start the job that builds its
        dashboards (tokens for its model if needed, its hook's activation cache, the dashboard pass)."""
        from loupe.jobs.pipeline import Pipeline
        from loupe.services.saes import external_sae_steps, register_external_sae

        model_id = model_id or self.models.default_id()
        if model_id is None:
            raise Conflict("no model is registered yet: wait for the build to train the demo model (see /api/jobs)")
        rec = register_external_sae(self.ws, self.models, sae_id, model_id, path, release, hub_sae_id)
        steps = external_sae_steps(self.ws, self.models, sae_id)
        pipeline = Pipeline(self.ws.jobs, steps)
        if background:
            threading.Thread(
                target=self._run_quietly, args=(pipeline, steps), name=f"sae-{sae_id}", daemon=True
            ).start()
        else:
            pipeline.run(steps)
        return self.describe(self.record(rec.id))

    @staticmethod
    def _run_quietly(pipeline, steps) -> None:
        try:
            pipeline.run(steps)
        except Exception:  # noqa: BLE001 - recorded on the job row, shown by the SAE's dashboard status
            pass

    def _require_dashboards(self, rec: SAERecord) -> None:
        if not self.dashboards_ready(rec):
            st = self.status(rec)
            raise Conflict(
                f"the dashboards of {rec.id} are not built yet ({st['state']}: {st.get('message', '')}); "
                "see /api/jobs for progress"
            )

    # -- features --------------------------------------------------------------------------
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
        rec = self.record(sae_id)
        self._require_dashboards(rec)
        total, rows = self.ws.saes.features(
            sae_id, sort, order == "desc", offset, limit, q, domain, min_density, max_density
        )
        return {
            "sae_id": sae_id,
            "total": total,
            "offset": offset,
            "features": [self._row(f, label) for f, label in rows],
        }

    @staticmethod
    def _row(f: SAEFeature, label: str | None) -> dict[str, Any]:
        return {**{k: getattr(f, k) for k in ROW_FIELDS}, "label": label}

    def dashboard_json(self, sae_id: str, index: int) -> bytes:
        """One feature's dashboard as JSON bytes: the page the dashboard build rendered (everything but
        labels), after the person's label and the neighbours' labels read now."""
        rec = self.record(sae_id)
        if not 0 <= index < rec.d_sae:
            raise NotFound(f"{sae_id} has features 0..{rec.d_sae - 1}; there is no feature {index}")
        self._require_dashboards(rec)
        manifest = self.dashboard_manifest(rec) or {}
        ddir = self.dashboard_dir(rec)
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
        own, shown = self.ws.saes.labels_around(sae_id, index, neighbours)
        return splice_json(
            orjson.dumps({"label": own, "neighbour_labels": {str(i): v for i, v in shown.items()}}), page
        )

    def set_label(self, sae_id: str, index: int, label: str) -> dict[str, Any]:
        rec = self.record(sae_id)
        if not 0 <= index < rec.d_sae:
            raise NotFound(f"{sae_id} has features 0..{rec.d_sae - 1}; there is no feature {index}")
        label = label.strip()
        if len(label) > 200:
            raise Unprocessable(f"a label is at most 200 characters; this one is {len(label)}")
        self.ws.saes.set_label(sae_id, index, label)
        return {"sae_id": sae_id, "index": index, "label": label or None}

    def neurons(self, sae_id: str) -> dict[str, Any]:
        rec = self.record(sae_id)
        self._require_dashboards(rec)
        path = self.dashboard_dir(rec) / "features.safetensors"
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

    # -- activations on text ---------------------------------------------------------------
    def sae(self, rec: SAERecord):
        with self._lock:
            if rec.id not in self._saes:
                from loupe.services.saes import load_sae

                self._saes[rec.id] = load_sae(self.sae_dir(rec), self.ws.settings.device)
            return self._saes[rec.id]

    def activations(self, sae_id: str, text: str, top_k: int, features: list[int] | None = None) -> dict[str, Any]:
        from loupe.core.activations import cache_activations

        rec = self.record(sae_id)
        bad = [i for i in features or [] if not 0 <= i < rec.d_sae]
        if bad:
            raise NotFound(f"{sae_id} has features 0..{rec.d_sae - 1}; there is no feature {bad[0]}")
        if not text:
            raise Unprocessable("text is empty; give some text to run the model on")
        lm: LoadedModel = self.models.get(rec.model_id)
        ids = lm.encode_prompt(text)
        if len(ids) > lm.n_ctx:
            raise Unprocessable(f"the text is {len(ids)} tokens; the model's context is {lm.n_ctx}: shorten it")
        sae = self.sae(rec)
        with lm.lock, torch.no_grad():
            acts = cache_activations(lm.bridge, torch.tensor([ids]), [rec.hook_name])[rec.hook_name][0]
            codes = sae.encode(acts.float().to(sae.device)).cpu()
        k = min(top_k, codes.shape[1])
        vals, idx = codes.topk(k, dim=1)
        labels = {}
        tokens = []
        for p, t in enumerate(ids):
            feats = [{"index": int(i), "activation": round(float(v), 4)} for v, i in zip(vals[p], idx[p]) if v > 0]
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
            "labels": self._labels(sae_id, list(labels)),
            "feature_activations": {str(i): [round(float(v), 4) for v in codes[:, i]] for i in features or []},
        }

    def _labels(self, sae_id: str, indices: list[int]) -> dict[str, str]:
        return {str(i): lab for i, lab in self.ws.saes.display_labels(sae_id, indices).items()}
