"""What the API and the CLI ask of steering beyond vectors: compute a direction from two prompt sets
and run the evaluation sweep, each as a job; read the sweeps' results."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from loupe.core import steering as S
from loupe.errors import NotFound, Unprocessable
from loupe.jobs.runner import JobContext, JobRunner
from loupe.services.datasets import DatasetService
from loupe.services.ids import ID_PATTERN, slug
from loupe.services.models import LoadedModel, ModelService
from loupe.services.steering.direction import compute_refusal_direction, outcome
from loupe.services.steering.evaluation import METHODS, SweepWorker, evaluate_steering, steering_targets
from loupe.services.steering.vectors import Vector, VectorStore
from loupe.services.workspace import Workspace
from loupe.storage.artifacts import digest


class SteeringService:
    def __init__(
        self, ws: Workspace, models: ModelService, vectors: VectorStore, jobs: JobRunner, datasets: DatasetService
    ):
        self.ws = ws
        self.models = models
        self.vectors = vectors
        self.jobs = jobs
        self.datasets = datasets  # labelled instructions when a request names a dataset, or names no prompts

    def instruction_sets(
        self, dataset_id: str | None, split: str, limit: int | None = None
    ) -> tuple[list[str], list[str]]:
        """(harmful, harmless) instructions of a split of `dataset_id` (default: the world's dataset)."""
        if dataset_id is None:
            world = self.datasets.world
            if world is None:
                raise Unprocessable("this workspace has no dataset of instructions: send `harmful` and `harmless`")
            dataset_id = world.dataset.id
        harmful, harmless = self.datasets.get(dataset_id).instruction_sets(split, limit=limit)
        if not harmful or not harmless:
            raise Unprocessable(
                f"dataset {dataset_id!r} has {len(harmful)} harmful and {len(harmless)} harmless {split} instructions; "
                'both are needed (label records with "harmful": true or false), or send `harmful` and `harmless`'
            )
        return harmful, harmless

    def compute(
        self,
        name: str,
        harmful: list[str] | None,
        harmless: list[str] | None,
        model_id: str | None,
        select_fraction: float = 0.25,
        rule: str = "bypass_minus_induce",
        keep_unpassed: bool = False,
        dataset_id: str | None = None,
    ) -> dict[str, Any]:
        """A direction from any two prompt sets (default: the train instructions of `dataset_id`), as a
        job: part of each set scores the candidates. The vector is saved when a candidate passes every
        filter; when none does, the job's result says so (`passed` false, the reason, the best
        candidates' scores) and no vector is saved, unless `keep_unpassed` keeps the best candidate
        within the KL bound, flagged as not passing."""
        lm = self.models.get(model_id)
        if harmful is None or harmless is None:
            if dataset_id is None and (harmful is not None or harmless is not None):
                raise Unprocessable("send both `harmful` and `harmless`, or a `dataset_id` of labelled instructions")
            harmful, harmless = self.instruction_sets(dataset_id, "train")
        if len(harmful) < 2 or len(harmless) < 2:
            raise Unprocessable("give at least 2 prompts in each set")
        if rule not in S.SELECTION_RULES:
            raise Unprocessable(f"unknown selection rule {rule!r}; choose one of {list(S.SELECTION_RULES)}")
        vid = f"{lm.id}-{slug(name)}"
        if not ID_PATTERN.match(vid):
            raise Unprocessable(f"name {name!r} does not make a usable id")

        def split(xs: list[str]) -> tuple[list[str], list[str]]:
            k = max(1, int(round(len(xs) * select_fraction)))
            return xs[:-k], xs[-k:]

        (h, hs), (hl, ls) = split(harmful), split(harmless)

        def body(ctx: JobContext) -> dict[str, Any]:
            res = compute_refusal_direction(lm, h, hl, hs, ls, progress=ctx.progress, rule=rule)
            out = outcome(res)
            if res["hook"] is None or not (res["passed"] or keep_unpassed):
                self.vectors.save_none(vid, out)
                return {"vector_id": None, **out}
            self.vectors.save_direction(vid, name, lm.id, res, "computed")
            return {"vector_id": vid, **out}

        # the same request again (same model, name, prompts and selection) joins the job already queued or running
        same = digest(["steering.compute", lm.id, name, h, hl, hs, ls, rule, keep_unpassed])
        job = self.jobs.submit(
            "steering", f"steering.compute.{vid}", {"name": name, "vector_id": vid}, body, dedupe=same
        )
        return {"job_id": job.id, "status": job.status, "vector_id": vid}

    def evaluation_inputs(
        self,
        vector_id: str,
        harmful: list[str] | None,
        harmless: list[str] | None,
        limit: int | None,
        dataset_id: str | None = None,
    ) -> tuple[LoadedModel, Vector, list[str], list[str]]:
        v = self.vectors.load(vector_id)
        lm = self.models.get(v.model_id)
        if harmful is None or harmless is None:
            held = self.instruction_sets(dataset_id, "heldout", limit)
            harmful = held[0] if harmful is None else harmful[:limit]
            harmless = held[1] if harmless is None else harmless[:limit]
        if not harmful and not harmless:
            raise Unprocessable("both prompt sets are empty")
        return lm, v, harmful, harmless

    def evaluate(
        self,
        vector_id: str,
        methods: list[str],
        alphas: list[float],
        harmful: list[str] | None = None,
        harmless: list[str] | None = None,
        limit: int | None = None,
        max_new_tokens: int = 12,
        wait: bool = False,
        dataset_id: str | None = None,
    ) -> dict[str, Any]:
        for m in methods:
            if m not in METHODS:
                raise Unprocessable(f"unknown method {m!r}; use any of {', '.join(METHODS)}")
        for a in alphas:
            if not math.isfinite(a):
                raise Unprocessable(f"alpha values must be finite, got {a}")
        lm, v, harmful, harmless = self.evaluation_inputs(vector_id, harmful, harmless, limit, dataset_id)
        plan = {m: list(alphas) for m in methods}

        def body(ctx: JobContext) -> dict[str, Any]:
            units = ctx.units()
            worker = self.sweep_worker(lm, v, max_new_tokens) if units.distributed else None
            res = evaluate_steering(
                lm, v, plan, harmful, harmless, max_new_tokens, progress=ctx.progress, units=units, worker=worker
            )
            res["targets"] = steering_targets(res)
            row = self.ws.evals.add("steering", v.model_id, res)
            return {"eval_id": row.id}

        name = f"steering.evaluate.{v.id}"
        params = {"vector_id": v.id, "methods": methods, "alphas": list(alphas), "dataset_id": dataset_id}
        if wait:
            out = self.jobs.run("steering", name, params, body)
            return {"status": "done", "eval_id": out["eval_id"]}
        same = digest(["steering.evaluate", params, harmful, harmless, max_new_tokens])
        job = self.jobs.submit("steering", name, params, body, dedupe=same)
        return {"job_id": job.id, "status": job.status}

    def sweep_worker(self, lm: LoadedModel, v: Vector, max_new_tokens: int) -> SweepWorker:
        """What a Ray actor needs to load `lm` itself for the sweep's units."""
        rec = self.models.record(lm.id)
        if rec is None:
            raise NotFound(f"unknown model {lm.id!r}")
        path = self.models.path(rec)
        path = str(Path(path).resolve()) if Path(path).exists() else path
        return SweepWorker(lm.id, path, dict(rec.config), self.ws.settings.device, v, max_new_tokens, 128)

    def evaluations(self, vector_id: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        rows = self.ws.evals.list(kind="steering", limit=200)
        out = [
            {"id": r.id, "created_at": r.created_at, **r.results}
            for r in rows
            if vector_id is None or r.results.get("vector_id") == vector_id
        ]
        return out[:limit]

    def evaluation(self, eval_id: int) -> dict[str, Any]:
        for r in self.ws.evals.list(kind="steering", limit=1000):
            if r.id == eval_id:
                return {"id": r.id, "created_at": r.created_at, **r.results}
        raise NotFound(f"no steering evaluation with id {eval_id}")
