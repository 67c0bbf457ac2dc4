"""Model diffing: what changed between a fine-tuned model and its parent, as a job.

    weights        every parameter tensor's relative Frobenius change, per layer (core.model_diff)
    activations    both models on the same tokens of a dataset (the parent's tokens: conversations written
                   with its chat template), the residual stream after every block compared token by token
    SAE features   an SAE trained on the parent applied to both models' activations at its hook: each
                   feature's mean activation and firing frequency, and their change
    refusal        the difference-of-means refusal direction (Arditi et al. 2024; services/steering/direction.py)
                   of each model at every layer and post-instruction position, from the dataset's harmful and
                   harmless train instructions, and the cosine between the parent's and the child's

The result is one artifact directory, written atomically, named by the diff's id (a fingerprint of the
models, the dataset, the SAE and the settings), so the same request again reads it instead of recomputing:

    artifacts/diffs/<diff_id>/   result.json, features.safetensors (every feature's statistics), manifest.json
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from loupe.core import model_diff as D
from loupe.core.activations import cache_activations
from loupe.core.config import Config
from loupe.errors import Conflict, NotFound, Unprocessable
from loupe.jobs.runner import JobContext, JobRunner
from loupe.services.activations import real_positions, sequences_for
from loupe.services.datasets import SPLITS, DatasetService
from loupe.services.model_diff.refusal import refusal_cosines
from loupe.services.models import LoadedModel, ModelService
from loupe.services.saes.registry import SAERegistry
from loupe.services.workspace import Workspace
from loupe.storage.artifacts import (
    atomic_dir,
    digest,
    fingerprint,
    load_tensors,
    read_manifest,
    save_tensors,
    write_manifest,
)
from loupe.storage.models import Job

KIND = "model_diff"
VERSION = "model-diff-v1"


@dataclass(frozen=True)
class DiffConfig(Config):
    split: str = "train"  # which split's tokens the activations are compared on
    n_tokens: int = 4096  # at least this many tokens (whole sequences), the first position of each left out
    n_instructions: int = 64  # harmful and as many harmless train instructions for the refusal directions
    layer_stride: int = 1  # refusal directions at every n-th block
    batch_size: int = 8  # sequences per forward pass
    top_k: int = 50  # features listed per ranking


def hf_parameters(lm: LoadedModel) -> dict[str, Tensor]:
    """The Hugging Face model's parameters by their own names (tied weights once): those of the plain
    module sharing the bridge's tensors; where there is none, the bridge's own parameters (its wrapper
    segments dropped from the names)."""
    plain = lm.plain_module()
    if plain is not None:
        return {k: p.detach() for k, p in plain.named_parameters()}
    out: dict[str, Tensor] = {}
    for key, p in lm.bridge.original_model.named_parameters():
        out.setdefault(key.replace("._original_component", ""), p.detach())
    return out


class ModelDiffService:
    def __init__(
        self, ws: Workspace, models: ModelService, datasets: DatasetService, saes: SAERegistry, jobs: JobRunner
    ):
        self.ws = ws
        self.models = models
        self.datasets = datasets
        self.saes = saes
        self.jobs = jobs

    def diff_dir(self, diff_id: str) -> Path:
        return self.ws.artifact("diffs", diff_id)

    # -- starting -----------------------------------------------------------------------------
    def parent_of(self, model_id: str) -> str:
        rec = self.models.record(model_id)
        if rec is None:
            raise NotFound(f"unknown model {model_id!r}")
        parent = (rec.config.get("lineage") or {}).get("parent")
        if not parent:
            raise Unprocessable(
                f"model {model_id!r} records no parent (it is not a fine-tune made here): name parent_id"
            )
        return str(parent)

    def _default_sae(self, parent: str) -> str | None:
        """The parent's first SAE whose weights exist (trained or registered)."""
        return next((r.id for r in self.saes.records(parent) if read_manifest(self.saes.sae_dir(r.id))), None)

    def start(
        self,
        model_id: str,
        dataset_id: str,
        parent_id: str | None = None,
        sae_id: str | None = None,
        cfg: DiffConfig | None = None,
    ) -> dict[str, Any]:
        """Queue the diff of `model_id` against `parent_id` (default: its lineage's parent) on `dataset_id`
        with `sae_id` (default: the parent's first SAE; none: no feature part). Returns {diff_id, job_id,
        status}: a diff already computed is `done` with no job; the same request while one runs joins it."""
        cfg = cfg or DiffConfig()
        if cfg.split not in SPLITS:
            raise Unprocessable(f"split must be one of {', '.join(SPLITS)}, not {cfg.split!r}")
        child = self.models.record(model_id)
        if child is None:
            raise NotFound(f"unknown model {model_id!r}")
        parent_id = parent_id or self.parent_of(model_id)
        parent = self.models.record(parent_id)
        if parent is None:
            raise NotFound(f"unknown parent model {parent_id!r}")
        if parent_id == model_id:
            raise Unprocessable("a model compared with itself has no difference: name another parent")
        for k in ("n_layers", "d_model", "d_vocab"):
            a, b = parent.config.get(k), child.config.get(k)
            if a is not None and b is not None and a != b:
                raise Unprocessable(
                    f"{model_id!r} and {parent_id!r} differ in {k} ({b} against {a}); a diff compares a model with "
                    "one of the same architecture (its fine-tuning parent)"
                )
        ds = self.datasets.get(dataset_id)
        if sae_id is not None:
            sae = self.saes.record(sae_id)
            if sae.model_id not in (None, parent_id):
                raise Unprocessable(
                    f"SAE {sae_id!r} belongs to model {sae.model_id!r}; give an SAE of the parent {parent_id!r}"
                )
            if read_manifest(self.saes.sae_dir(sae_id)) is None:
                raise Conflict(f"SAE {sae_id!r} is not trained yet (see /api/jobs); wait for it or name another")
        else:
            sae_id = self._default_sae(parent_id)
        keys = [
            fingerprint(self.datasets.subject(m, dataset_id).model_key, r.path, r.config)
            for m, r in ((model_id, child), (parent_id, parent))
        ]
        sae_key = self.saes.weights_key(sae_id) if sae_id else None
        diff_id = digest([VERSION, model_id, parent_id, dataset_id, ds.key, sae_id, sae_key, keys, cfg.to_dict()])
        params = {
            "diff_id": diff_id,
            "model_id": model_id,
            "parent_id": parent_id,
            "dataset_id": dataset_id,
            "sae_id": sae_id,
            "config": cfg.to_dict(),
        }
        if self._complete(diff_id):
            return {"diff_id": diff_id, "job_id": None, "status": "done"}
        job = self.jobs.submit(
            KIND,
            f"diff.{model_id}.{parent_id}",
            params,
            lambda ctx: self._run(ctx, diff_id, model_id, parent_id, dataset_id, sae_id, cfg),
            dedupe=f"{KIND}:{diff_id}",
        )
        return {"diff_id": diff_id, "job_id": job.id, "status": job.status}

    def _complete(self, diff_id: str) -> bool:
        m = read_manifest(self.diff_dir(diff_id))
        return m is not None and m.get("key") == diff_id

    # -- the job ------------------------------------------------------------------------------
    def _run(
        self,
        ctx: JobContext,
        diff_id: str,
        model_id: str,
        parent_id: str,
        dataset_id: str,
        sae_id: str | None,
        cfg: DiffConfig,
    ) -> dict[str, Any]:
        ctx.progress(0, None, "loading the models")
        parent, child = self.models.get(parent_id), self.models.get(model_id)
        if parent.tokenizer.get_vocab() != child.tokenizer.get_vocab():
            raise Unprocessable(
                f"{model_id!r} and {parent_id!r} have different vocabularies; their tokens cannot be compared"
            )
        n_layers = int(parent.info["n_layers"])

        ctx.progress(0, None, "comparing weights")
        t0 = time.monotonic()
        try:
            changes = D.weight_changes(hf_parameters(parent), hf_parameters(child))
        except ValueError as exc:
            raise Unprocessable(f"{model_id!r} against {parent_id!r}: {exc}") from exc
        weights = D.layer_weight_change(changes, n_layers)
        t1 = time.monotonic()
        activations, features, sae_info = self._activations(ctx, parent, child, dataset_id, sae_id, cfg, n_layers)
        t2 = time.monotonic()
        refusal = self._refusal(ctx, parent, child, dataset_id, cfg, n_layers)
        seconds = {
            "weights": round(t1 - t0, 2),
            "activations": round(t2 - t1, 2),
            "refusal": round(time.monotonic() - t2, 2),
        }

        result = {
            "diff_id": diff_id,
            "model_id": model_id,
            "parent_id": parent_id,
            "dataset_id": dataset_id,
            "config": cfg.to_dict(),
            "n_layers": n_layers,
            "weights": {
                **weights,
                "params": [c.to_dict() for c in sorted(changes, key=lambda c: -c.relative)],
            },
            "activations": activations,
            "features": sae_info,
            "refusal": refusal,
            "seconds": seconds,
        }
        with atomic_dir(self.diff_dir(diff_id)) as tmp:
            (tmp / "result.json").write_text(json.dumps(_finite(result)))
            if features is not None:
                save_tensors(tmp / "features.safetensors", {k: v.float() for k, v in features.items()})
            write_manifest(
                tmp, {"key": diff_id, "model_id": model_id, "parent_id": parent_id, "dataset_id": dataset_id}
            )
        return {"diff_id": diff_id}

    def _activations(
        self,
        ctx: JobContext,
        parent: LoadedModel,
        child: LoadedModel,
        dataset_id: str,
        sae_id: str | None,
        cfg: DiffConfig,
        n_layers: int,
    ) -> tuple[dict[str, Any], dict[str, Tensor] | None, dict[str, Any]]:
        subject = self.datasets.subject(parent.id, dataset_id)
        step = self.datasets.tokens_step(subject)
        if step is not None and not step.is_complete():
            step.body(ctx)  # the dataset in the parent's tokens (written atomically; the child reads the same)
        path = subject.tokens(cfg.split)
        if not path.is_file():
            raise Unprocessable(
                f"dataset {dataset_id!r} has no {cfg.split} tokens for {parent.id!r} yet (see /api/jobs)"
            )
        t = load_tensors(path)
        real = real_positions(t["loss_mask"], first_position=False)  # the first position: an attention sink
        n_seq = sequences_for(real, cfg.n_tokens)
        if n_seq == 0 or not real[:n_seq].any():
            raise Unprocessable(f"dataset {dataset_id!r} has no {cfg.split} tokens to compare the models on")
        hooks = [f"blocks.{layer}.hook_resid_post" for layer in range(n_layers)]

        sae: Any = None
        sae_hook = None
        sae_info: dict[str, Any] = {"sae_id": None, "skipped": f"the parent {parent.id!r} has no SAE"}
        if sae_id is not None:
            sae, rec = self.saes.load_for(sae_id, parent)
            sae_hook = rec.hook_name
            sae_info = {"sae_id": sae_id, "hook_name": sae_hook, "d_sae": rec.d_sae, "skipped": None}
        names = list(dict.fromkeys([*hooks, *([sae_hook] if sae_hook else [])]))
        for lm in (parent, child):
            unknown = [n for n in names if n not in lm.bridge.hook_dict]
            if unknown:
                raise Unprocessable(f"model {lm.id!r} has no hook {unknown[0]!r}")

        acc = D.ActivationDiff()
        fp, fc = D.FeatureStats(), D.FeatureStats()
        ids_all, real = t["input_ids"][:n_seq], real[:n_seq]
        for start in range(0, n_seq, cfg.batch_size):
            ids = ids_all[start : start + cfg.batch_size]
            mask = real[start : start + cfg.batch_size]
            acts = {}
            for side, lm in (("parent", parent), ("child", child)):
                with lm.lock, torch.no_grad():
                    acts[side] = cache_activations(lm.bridge, ids, names)
            for h in hooks:
                acc.update(h, acts["parent"][h][mask], acts["child"][h][mask])
            if sae is not None and sae_hook is not None:
                with torch.no_grad():
                    fp.update(sae.encode(acts["parent"][sae_hook][mask].float().to(sae.device)).cpu())
                    fc.update(sae.encode(acts["child"][sae_hook][mask].float().to(sae.device)).cpu())
            ctx.progress(
                min(start + cfg.batch_size, n_seq), n_seq, f"activations: {start + len(ids):,}/{n_seq:,} sequences"
            )

        per_hook = acc.result()
        activations = {
            "split": cfg.split,
            "n_sequences": n_seq,
            "n_tokens": per_hook[hooks[0]]["n_tokens"],
            "layers": [{"layer": i, "hook": h, **per_hook[h]} for i, h in enumerate(hooks)],
        }
        features = None
        if sae is not None:
            features = D.feature_changes(fp, fc)
            sae_info["n_tokens"] = fp.n
            sae_info["top"] = {
                by: [_feature_row(features, i) for i in D.top_features(features, cfg.top_k, by)] for by in D.RANKINGS
            }
            sae_info["n_changed"] = int((features["delta_mean"] != 0).sum())
        return activations, features, sae_info

    def _refusal(
        self, ctx: JobContext, parent: LoadedModel, child: LoadedModel, dataset_id: str, cfg: DiffConfig, n_layers: int
    ) -> dict[str, Any]:
        harmful, harmless = self.datasets.get(dataset_id).instruction_sets("train", limit=cfg.n_instructions)
        if not harmful or not harmless:
            return {
                "skipped": f"dataset {dataset_id!r} has {len(harmful)} harmful and {len(harmless)} harmless train "
                'instructions; a refusal direction needs both (records labelled with "harmful": true or false)'
            }
        return refusal_cosines(parent, child, harmful, harmless, n_layers, cfg.layer_stride, ctx.progress)

    # -- reading ------------------------------------------------------------------------------
    def _jobs(self) -> list[Job]:
        return self.ws.jobs.list(kind=KIND)

    def get(self, diff_id: str) -> dict[str, Any]:
        """{diff_id, status, job_id, error, progress, params, result}: `result` once it is done
        (the top features with their current labels)."""
        job = next((j for j in self._jobs() if j.params.get("diff_id") == diff_id), None)
        done = self._complete(diff_id)
        if job is None and not done:
            raise NotFound(f"no model diff {diff_id!r}; start one with POST /api/diffs")
        out: dict[str, Any] = {
            "diff_id": diff_id,
            "status": "done" if done else job.status if job else "done",
            "job_id": job.id if job else None,
            "error": None if done or job is None else job.error,
            "progress": {"done": job.progress_done, "total": job.progress_total, "message": job.message or ""}
            if job
            else None,
            "params": job.params if job else None,
            "result": None,
        }
        if done:
            result = json.loads((self.diff_dir(diff_id) / "result.json").read_text())
            self._label(result.get("features") or {})
            out["result"] = result
            out["params"] = out["params"] or {
                k: result[k] for k in ("diff_id", "model_id", "parent_id", "dataset_id", "config")
            }
        return out

    def _label(self, features: dict[str, Any]) -> None:
        sae_id = features.get("sae_id")
        top = features.get("top") or {}
        if not sae_id or not top:
            return
        rec = self.ws.saes.get(sae_id)
        indices = sorted({row["index"] for rows in top.values() for row in rows})
        labels = self.ws.saes.display_labels(sae_id, indices, rec.version or 1) if rec else {}
        for rows in top.values():
            for row in rows:
                row["label"] = labels.get(row["index"])

    def list(self) -> list[dict[str, Any]]:
        """Every diff started, newest first (one row per diff id: its latest job)."""
        seen: set[str] = set()
        out = []
        for j in self._jobs():
            p = j.params or {}
            did = p.get("diff_id")
            if not did or did in seen:
                continue
            seen.add(did)
            done = self._complete(did)
            out.append(
                {
                    "diff_id": did,
                    "model_id": p.get("model_id"),
                    "parent_id": p.get("parent_id"),
                    "dataset_id": p.get("dataset_id"),
                    "sae_id": p.get("sae_id"),
                    "status": "done" if done else j.status,
                    "job_id": j.id,
                    "created_at": j.created_at,
                }
            )
        return out


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _finite(obj: Any) -> Any:
    """JSON has no NaN or infinity: such numbers become null."""
    if isinstance(obj, float):
        return _num(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _feature_row(ch: dict[str, Tensor], i: int) -> dict[str, Any]:
    return {"index": i, **{k: float(v[i]) for k, v in ch.items()}}
