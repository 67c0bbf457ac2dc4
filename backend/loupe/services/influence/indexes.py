"""Which influence indexes a workspace has, one per (model, dataset, target): the world's own (its model
and the tokens it was trained on; built with the world) and any other built from the API, their status,
their builds (job chains), and which index a query of a model uses."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from loupe.core import tracked_layers as L
from loupe.errors import Conflict, NotFound, Unprocessable
from loupe.jobs.pipeline import Pipeline
from loupe.jobs.runner import INTERACTIVE, JobRunner
from loupe.services.datasets import DatasetService, Subject
from loupe.services.influence.build import InfluencePipeline
from loupe.services.influence.config import CACHE_FORMAT, TARGETS, InfluenceConfig, index_config
from loupe.services.influence.training import (
    EXAMPLE_DOMAINS,
    IndexRef,
    TrainingSet,
    check_target,
    example_max_length,
    examples_step,
    tracked_lora,
    tracked_mlp,
)
from loupe.services.models import ModelService
from loupe.services.workspace import Workspace
from loupe.storage.artifacts import fingerprint, read_manifest
from loupe.storage.models import Job


def _model_type(model_dir: Path) -> str:
    """config.json's model_type of a Hugging Face directory ("" where it has none)."""
    try:
        return str(json.loads((model_dir / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError):
        return ""


def _job_info(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "done": job.progress_done,
        "total": job.progress_total,
        "message": job.message,
        "error": (job.error or "").splitlines()[0] if job.error else None,
    }


class InfluenceIndexes:
    def __init__(
        self,
        ws: Workspace,
        subject: Subject | None,
        cfg: InfluenceConfig | None,
        models: ModelService | None = None,
        datasets: DatasetService | None = None,
        jobs: JobRunner | None = None,
    ):
        self.ws = ws
        self.subject = subject
        self.models = models
        self.datasets = datasets
        self.jobs = jobs
        self.preset = cfg  # the world's settings; their query-time fields apply to any built index
        self._adopt_legacy()

    # -- which indexes there are --------------------------------------------------------------------
    def world_ref(self) -> IndexRef | None:
        """The world's own index (its model and training set), where the world builds one."""
        if self.subject is None or self.preset is None:
            return None
        return IndexRef(self.subject.model_id, self.subject.dataset.id, "mlp")

    def root(self, ref: IndexRef) -> Path:
        return self.ws.artifact("influence", ref.model_id, ref.dataset_id, ref.target)

    @property
    def factors_dir(self) -> Path:
        """The world's index's factors."""
        ref = self.world_ref()
        assert ref is not None, "the world builds no influence index"
        return self.root(ref) / "factors"

    def _adopt_legacy(self) -> None:
        """A workspace built before indexes were per (model, dataset) kept the world's under
        artifacts/influence/{factors,gradients}: moved (renamed) to the world's index directory."""
        ref, legacy = self.world_ref(), self.ws.artifact("influence")
        if ref is None or not (legacy / "factors" / "manifest.json").is_file() or self.root(ref).exists():
            return
        self.root(ref).mkdir(parents=True)
        for name in ("factors", "gradients"):
            if (legacy / name).is_dir():
                os.replace(legacy / name, self.root(ref) / name)

    def training_set(self, ref: IndexRef) -> TrainingSet:
        """What index `ref` is of; NotFound for an unknown model or dataset, Unprocessable where EK-FAC
        cannot track the model as asked."""
        check_target(ref.target)
        root = self.root(ref)
        subject = self.subject
        if ref == self.world_ref():
            assert subject is not None and self.preset is not None
            model_dir = subject.model_dir
            return TrainingSet(
                ref=ref,
                root=root,
                model_key=subject.model_key,
                tokens_path=subject.tokens("train"),
                domains=tuple(subject.dataset.domains),
                load_model=lambda: tracked_mlp(model_dir),
                cfg=self.preset,
                step_prefix="influence",
                model_dir=model_dir,
            )
        if self.models is None or self.datasets is None:
            raise Conflict("this server builds no influence index but the world's")
        rec = self.models.record(ref.model_id)
        if rec is None:
            raise NotFound(f"unknown model {ref.model_id!r}")
        dataset = self.datasets.get(ref.dataset_id)
        model_dir = Path(self.models.path(rec))
        lineage = rec.config.get("lineage") or None
        family = _model_type(model_dir)
        if ref.target == "mlp":
            if family not in L.MLP_LINEARS:
                raise Unprocessable(
                    f"Loupe does not know the MLP layers of model {ref.model_id!r} (model type {family!r}; it knows "
                    f"{', '.join(sorted(L.MLP_LINEARS))}); for a LoRA fine-tune use target 'lora'"
                )

            def load_model() -> tuple[Any, list[str]]:
                return tracked_mlp(model_dir)

        else:
            adapter = model_dir / "adapter"
            parent = self.models.record(str((lineage or {}).get("parent")))
            if (lineage or {}).get("method") != "lora" or not adapter.is_dir() or parent is None:
                raise Unprocessable(
                    f"model {ref.model_id!r} is not a LoRA fine-tune made by Loupe (target 'lora' needs its adapter "
                    "and its parent); use target 'mlp'"
                )
            parent_dir = Path(self.models.path(parent))

            def load_model() -> tuple[Any, list[str]]:
                return tracked_lora(parent_dir, adapter)

        model_key = fingerprint("model", (read_manifest(model_dir) or {}).get("key"), rec.path, rec.config)
        n_ctx = int(rec.config.get("n_ctx", 2048))
        max_length = example_max_length(lineage, ref.dataset_id, n_ctx)
        pair = root.parent
        prefix = f"influence.{ref.model_id}.{ref.dataset_id}"
        chat = self.models.chat_format(ref.model_id)
        examples = examples_step(
            f"{prefix}.examples", pair / "examples", model_key, model_dir, chat, dataset, max_length
        )
        return TrainingSet(
            ref=ref,
            root=root,
            model_key=model_key,
            tokens_path=pair / "examples" / "train.safetensors",
            domains=EXAMPLE_DOMAINS,
            load_model=load_model,
            cfg=index_config(f"{ref.model_id}/{ref.dataset_id}/{ref.target}", self.preset, ref.target),
            step_prefix=f"{prefix}.{ref.target}",
            examples=examples,
            model_dir=model_dir,
        )

    def pipeline(self, ref: IndexRef) -> InfluencePipeline:
        return InfluencePipeline(self.training_set(ref))

    def refs(self) -> list[IndexRef]:
        """Every index the workspace has or has been asked to build: the world's, those on disk, those of
        build jobs."""
        found: list[IndexRef] = []
        world = self.world_ref()
        if world is not None:
            found.append(world)
        top = self.ws.artifact("influence")
        if top.is_dir():
            for m in sorted(p for p in top.iterdir() if p.is_dir() and not p.name.startswith(".")):
                for d in sorted(p for p in m.iterdir() if p.is_dir() and not p.name.startswith(".")):
                    found += [IndexRef(m.name, d.name, t) for t in TARGETS if (d / t).is_dir()]
        for job in self.ws.jobs.list(limit=500, kind="build"):
            p = job.params or {}
            if job.name.startswith("influence.") and p.get("target") in TARGETS and "model_id" in p:
                found.append(IndexRef(str(p["model_id"]), str(p["dataset_id"]), str(p["target"])))
        return list(dict.fromkeys(found))

    def _step_names(self, ref: IndexRef) -> list[str]:
        if ref == self.world_ref():
            return ["influence.factors", "influence.gradients"]
        prefix = f"influence.{ref.model_id}.{ref.dataset_id}"
        return [f"{prefix}.examples", f"{prefix}.{ref.target}.factors", f"{prefix}.{ref.target}.gradients"]

    def describe(self, ref: IndexRef) -> dict[str, Any]:
        """An index's status (ready | building | failed | not built), its latest jobs and its sizes."""
        ready = self.ready(ref)
        jobs = [j for j in (self.ws.jobs.latest(n) for n in self._step_names(ref)) if j is not None]
        active = [j for j in jobs if j.status in ("queued", "running")]
        failed = [j for j in jobs if j.status == "failed"]
        status = "ready" if ready else "building" if active else "failed" if failed else "not built"
        fm = read_manifest(self.root(ref) / "factors") or {}
        gm = read_manifest(self.root(ref) / "gradients") or {}
        job = active[0] if active else failed[0] if failed else None
        return {
            **ref.to_dict(),
            "status": status,
            "ready": ready,
            "world": ref == self.world_ref(),
            "n_train": gm.get("n_train") if ready else None,
            "modules": len(fm.get("modules", [])) if ready else None,
            "dim": gm.get("dim") if ready else None,
            "bytes_per_sequence": gm.get("bytes_per_sequence") if ready else None,
            "job": None if job is None else _job_info(job),
        }

    def list_indexes(self) -> list[dict[str, Any]]:
        return [self.describe(r) for r in self.refs()]

    def build(self, model_id: str, dataset_id: str, target: str = "mlp") -> tuple[dict[str, Any], list[Job]]:
        """Queue the build of index (model_id, dataset_id, target) as a chain of jobs (examples, factors,
        gradients); the same request while it runs joins it; nothing is queued for a built index."""
        if self.jobs is None:
            raise Conflict("this server has no job runner for influence builds")
        ref = IndexRef(model_id, dataset_id, target)
        steps = self.pipeline(ref).steps()
        dedupe = f"influence-index:{model_id}:{dataset_id}:{target}"
        jobs = Pipeline(self.jobs, steps).submit_chain(steps, INTERACTIVE, ref.to_dict(), dedupe)
        return self.describe(ref), jobs

    def resolve(self, model_id: str | None, dataset_id: str | None = None, target: str | None = None) -> IndexRef:
        """The index a query of `model_id` uses (None: the world's model): the one named by dataset and
        target, else a built one (the world's first, then the model's fine-tuning dataset, then the
        suggested target: LoRA for a LoRA fine-tune, else MLP). Conflict (409) naming how to build one
        where the model has none."""
        if target is not None:
            check_target(target)
        world = self.world_ref()
        if model_id is None:
            model_id = world.model_id if world is not None else (self.models.default_id() if self.models else None)
        refs = [
            r
            for r in self.refs()
            if r.model_id == model_id
            and (dataset_id is None or r.dataset_id == dataset_id)
            and (target is None or r.target == target)
        ]
        if not refs:
            raise self.not_built(model_id, dataset_id, target)
        lineage_ds, suggested = self._lineage_defaults(model_id)

        def rank(r: IndexRef) -> tuple[bool, bool, bool, bool]:
            return (not self.ready(r), r != world, r.dataset_id != lineage_ds, r.target != suggested)

        return min(refs, key=rank)

    def _lineage(self, model_id: str | None) -> dict[str, Any]:
        """The model's lineage (a fine-tune made by Loupe: parent, dataset_id, config), else {}."""
        rec = self.models.record(model_id) if self.models is not None and model_id else None
        return (rec.config.get("lineage") or {}) if rec is not None else {}

    def _lineage_defaults(self, model_id: str | None) -> tuple[str | None, str]:
        """(the dataset the model was fine-tuned on or None, the target to suggest): lora for a LoRA
        fine-tune (its adapter is what it learnt; on the SmolLM2 safety tune its factors attribute better,
        LDS 0.78 against 0.71, and query faster: bench/RESULTS.md, 2026-12-07), else mlp."""
        lineage = self._lineage(model_id)
        method = (lineage.get("config") or {}).get("method")
        return lineage.get("dataset_id") or None, "lora" if method == "lora" else "mlp"

    def not_built(self, model_id: str | None, dataset_id: str | None = None, target: str | None = None) -> Conflict:
        lineage_ds, suggested = self._lineage_defaults(model_id)
        dataset = dataset_id or lineage_ds or "DATASET"
        have = [f"model {r.model_id!r} on {r.dataset_id!r} ({r.target})" for r in self.refs() if self.ready(r)]
        built = f"this workspace's indexes: {'; '.join(have)}" if have else "this workspace has no built index"
        body = json.dumps({"model_id": model_id, "dataset_id": dataset, "target": target or suggested})
        what = f" on dataset {dataset_id!r}" if dataset_id else ""
        return Conflict(
            f"influence is not built for model {model_id!r}{what} ({built}). Influence needs the data the model "
            f"was trained on: build an index with POST /api/influence/indexes {body} (the Influence page's "
            "build button), then ask again"
        )

    def ready(self, ref: IndexRef | None = None) -> bool:
        """Factors and a gradient cache built from them (a cache of an older format or of other factors
        is stale: the build's gradients step replaces it). Default: the world's index."""
        ref = ref or self.world_ref()
        if ref is None:
            return False
        f, g = self.root(ref) / "factors", self.root(ref) / "gradients"
        fm, gm = read_manifest(f), read_manifest(g)
        return (
            fm is not None
            and gm is not None
            and gm.get("factors_key") == fm.get("key")
            and gm.get("format") == CACHE_FORMAT
            and all((g / s["file"]).is_file() for s in gm.get("shards", []))
        )

    def not_ready(self, ref: IndexRef | None = None) -> Conflict:
        ref = ref or self.world_ref()
        if ref is None:
            world = self.ws.settings.world
            return Conflict(
                f"influence is not part of this world's build (LOUPE_WORLD={world}): build an index of a model on "
                "the data it was trained on with POST /api/influence/indexes (the Influence page's build button)"
            )
        parts = []
        for name in self._step_names(ref):
            job = self.ws.jobs.latest(name)
            if job is None:
                parts.append(f"{name}: not started")
            else:
                total = f"/{job.progress_total:,.0f}" if job.progress_total else ""
                parts.append(f"{name}: {job.status} {job.progress_done:,.0f}{total} {job.message}".strip())
        how = (
            ""
            if ref == self.world_ref()
            else f"; build it with POST /api/influence/indexes {json.dumps(ref.to_dict())}"
        )
        return Conflict("influence factors are not built yet (" + "; ".join(parts) + f"); see /api/jobs{how}")
