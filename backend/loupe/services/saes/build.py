"""The SAE analysis as build steps, for any subject (a model and a dataset in its tokens):

    saes.cache.<hook>          the hook's activations over the dataset (services.activations)
    saes.train.<preset>        one SAE per preset (services.saes.training), registered
    saes.eval                  every preset measured on held-out tokens (services.saes.evaluation)
    saes.dashboards.<preset>   feature dashboards and pages (services.saes.dashboards)

and the steps that give a registered SAE its dashboards (its model's tokens of the dataset, its
hook's cache, the same dashboard pass).

    activations/<model_id>/<hook_name>/   dashboards/<sae_id>/   evals/saes/
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from loupe.core.config import Progress, no_progress
from loupe.jobs.pipeline import Step
from loupe.jobs.runner import JobContext
from loupe.services.activations import ActivationCache, ActivationCacheConfig, CacheWorker, write_activation_cache
from loupe.services.datasets import SPLITS, Dataset, Subject
from loupe.services.models import ModelService, load_bridge
from loupe.services.saes.configs import DashboardConfig, SAETrainConfig
from loupe.services.saes.dashboards import DASHBOARDS_VERSION, compute_dashboards
from loupe.services.saes.evaluation import evaluate_sae, metric_summary
from loupe.services.saes.registry import SAERegistry
from loupe.services.saes.training import cache_config, load_sae, train_sae
from loupe.storage.artifacts import atomic_dir, fingerprint, load_tensors, read_manifest, write_manifest


def _part_progress(progress: Progress, i: int, n: int, name: str) -> Progress:
    """Progress of part `i` of `n` on one 0..n scale, its messages prefixed with `name`."""
    return lambda d, t, m: progress(i + d / (t or 1), n, f"{name}: {m}")


class SAEPipeline:
    """Paths, keys and step bodies of the SAE analysis of one subject."""

    def __init__(
        self,
        registry: SAERegistry,
        subject: Subject,
        presets: Sequence[SAETrainConfig],
        dashboard_cfg: DashboardConfig,
        *,
        sae_id: str | None = None,
    ):
        """`sae_id`: None for the world's analysis (SAE ids "<model_id>-<preset>", the world's paths
        and job names); an SAE trained from the app gives its id (one preset), which names its jobs
        and its evaluation, and registers it as "trained" on the subject's dataset."""
        self.own_id = sae_id
        self.source = "demo" if sae_id is None else "trained"
        self.registry = registry
        self.ws = registry.ws
        self.subject = subject
        self.model_id = subject.model_id
        self.presets = list(presets)
        self.hooks = list(dict.fromkeys(p.hook_name for p in self.presets))
        self.cache_cfgs = {h: cache_config(self.presets, h) for h in self.hooks}
        self.cache_keys = {h: fingerprint(subject.model_key, c.to_dict()) for h, c in self.cache_cfgs.items()}
        self.sae_keys = {p.name: fingerprint(self.cache_keys[p.hook_name], p.to_dict()) for p in self.presets}
        self.eval_key = fingerprint("saes-eval-v1", sorted(self.sae_keys.items()))
        self.eval_dir = (
            self.ws.artifact("evals", "saes") if sae_id is None else self.ws.artifact("evals", "sae", sae_id)
        )
        self.dashboard_cfg = dashboard_cfg
        self.dash_keys = {
            p.name: fingerprint(DASHBOARDS_VERSION, self.sae_keys[p.name], dashboard_cfg.to_dict())
            for p in self.presets
        }

    def cache_dir(self, hook_name: str) -> Path:
        return cache_root(self.ws, self.subject) / hook_name

    def sae_id(self, preset: SAETrainConfig | str) -> str:
        if self.own_id is not None:
            return self.own_id
        return f"{self.model_id}-{preset if isinstance(preset, str) else preset.name}"

    def job_name(self, kind: str, part: str) -> str:
        """A step's job name: the world's by hook or preset, an app-trained SAE's by its id."""
        if self.own_id is None:
            return f"saes.{kind}.{part}"
        if kind == "cache":
            return f"saes.cache.{self.model_id}.{self.subject.dataset.id}.{part}"
        return f"saes.{kind}.{self.own_id}"

    def sae_dir(self, preset: SAETrainConfig | str) -> Path:
        return self.registry.sae_dir(self.sae_id(preset))

    def dashboard_dir(self, preset: SAETrainConfig | str) -> Path:
        return self.registry.dashboard_dir(self.sae_id(preset))

    def steps(self) -> list[Step]:
        out = [
            Step(
                self.job_name("cache", h),
                f"cache {h}",
                self.cache_dir(h),
                partial(self.cache, hook_name=h),
                background=True,
                key=self.cache_keys[h],
            )
            for h in self.hooks
        ]
        out += [
            Step(
                self.job_name("train", p.name),
                f"train SAE {p.name}",
                self.sae_dir(p),
                partial(self.train, preset=p),
                background=True,
                key=self.sae_keys[p.name],
            )
            for p in self.presets
        ]
        eval_job = "saes.eval" if self.own_id is None else f"saes.eval.{self.own_id}"
        out.append(Step(eval_job, "evaluate SAEs", self.eval_dir, self.evaluate, background=True, key=self.eval_key))
        out += [
            Step(
                self.job_name("dashboards", p.name),
                f"dashboards {p.name}",
                self.dashboard_dir(p),
                partial(self.dashboards, preset=p),
                background=True,
                key=self.dash_keys[p.name],
                committed=partial(self.ws.saes.dashboards_key, self.sae_id(p)),
            )
            for p in self.presets
        ]
        return out

    # -- bodies ------------------------------------------------------------------------------
    def _bridge(self) -> Any:
        return load_bridge(str(self.subject.model_dir), self.ws.settings.device)[0]

    def _tokens(self, split: str) -> dict[str, Any]:
        return load_tensors(self.subject.tokens(split))

    def cache(self, ctx: JobContext, hook_name: str) -> dict[str, Any]:
        ctx.progress(0, None, "loading model")
        cfg = self.cache_cfgs[hook_name]
        worker = CacheWorker(
            str(self.subject.model_dir.resolve()),
            self.ws.settings.device,
            tuple((s, str(self.subject.tokens(s).resolve())) for s in SPLITS),
            cfg,
        )
        m = write_activation_cache(
            worker,
            {s: self._tokens(s) for s in SPLITS},
            cfg,
            self.cache_dir(hook_name),
            key=self.cache_keys[hook_name],
            progress=ctx.progress,
            meta={"model_id": self.model_id, "domains": list(self.subject.dataset.domains)},
            units=ctx.units(),
        )
        return {
            "dir": str(self.cache_dir(hook_name)),
            "d_in": m["d_in"],
            **{f"{s}_tokens": m["splits"][s]["n_tokens"] for s in SPLITS},
        }

    def train(self, ctx: JobContext, preset: SAETrainConfig) -> dict[str, Any]:
        sid = self.sae_id(preset)
        m = train_sae(
            preset,
            ActivationCache(self.cache_dir(preset.hook_name)),
            self.sae_dir(preset),
            key=self.sae_keys[preset.name],
            progress=ctx.progress,
            metadata={
                "sae_id": sid,
                "model_name": self.model_id,
                "model_id": self.model_id,
                "context_size": self.subject.n_ctx,
                "dataset_id": self.subject.dataset.id,
                **({} if self.own_id is None else {"source": self.source}),
            },
            device=self.ws.settings.device,
        )
        self.register(preset)
        return {"dir": str(self.sae_dir(preset)), "sae_id": sid, "d_sae": m["d_sae"], **m["training"]}

    def register(self, preset: SAETrainConfig) -> None:
        sid = self.sae_id(preset)
        dataset_id = None if self.own_id is None else self.subject.dataset.id
        self.registry.register_trained(
            sid, self.model_id, preset.hook_name, preset.architecture, source=self.source, dataset_id=dataset_id
        )
        self.registry.forget(sid)

    def dashboards(self, ctx: JobContext, preset: SAETrainConfig) -> dict[str, Any]:
        sid = self.sae_id(preset)
        self.register(preset)
        ctx.progress(0, None, "loading model and SAE")
        info = compute_dashboards(
            self.ws,
            sid,
            load_sae(self.sae_dir(preset), self.ws.settings.device),
            self._bridge(),
            AutoTokenizer.from_pretrained(str(self.subject.model_dir)),
            ActivationCache(self.cache_dir(preset.hook_name)),
            self._tokens("train")["input_ids"],
            self.subject.dataset.domains,
            self.dashboard_cfg,
            self.dashboard_dir(preset),
            self.dash_keys[preset.name],
            ctx.progress,
            ctx.units(),
            self.sae_dir(preset),
        )
        return {"sae_id": sid, "dir": str(self.dashboard_dir(preset)), **info}

    def evaluate_all(self, progress: Progress = no_progress) -> dict[str, Any]:
        """Every preset's SAE measured on held-out tokens: {"model_id", "saes": {sae_id: metrics}, ...}."""
        t0 = time.monotonic()
        model = self._bridge()
        heldout = self._tokens("heldout")
        dataset = self.subject.dataset
        n = len(self.presets)
        out: dict[str, Any] = {}
        for i, p in enumerate(self.presets):
            r = evaluate_sae(
                load_sae(self.sae_dir(p), self.ws.settings.device),
                model,
                ActivationCache(self.cache_dir(p.hook_name)),
                heldout,
                dataset.domains,
                dataset.planted_domains,
                eval_tokens=p.eval_tokens,
                select_tokens=p.select_tokens,
                progress=_part_progress(progress, i, n, p.name),
            )
            out[self.sae_id(p)] = {"name": p.name, "config": p.to_dict(), **r}
        return {
            "model_id": self.model_id,
            "saes": out,
            "targets_met": all(t["met"] for r in out.values() for t in r["targets"].values()),
            "seconds": round(time.monotonic() - t0, 1),
        }

    def evaluate(self, ctx: JobContext) -> dict[str, Any]:
        results = self.evaluate_all(ctx.progress)
        # the world's evaluation of all its SAEs is kind "saes"; one SAE trained from the app, "sae"
        row = self.ws.evals.add("saes" if self.own_id is None else "sae", self.model_id, results)
        for p in self.presets:
            self.register(p)
            self.ws.saes.update(self.sae_id(p), metrics=metric_summary(results["saes"][self.sae_id(p)]))
        with atomic_dir(self.eval_dir) as tmp:
            (tmp / "results.json").write_text(json.dumps(results, indent=1))
            write_manifest(tmp, {"key": self.eval_key, "eval_id": row.id})
        keys = ("fvu", "l0", "dead_fraction", "ce_loss_recovered", "planted_domains_detected")
        return {"eval_id": row.id, **{sid: {k: r[k] for k in keys} for sid, r in results["saes"].items()}}


def cache_root(ws: Any, subject: Subject) -> Path:
    """Where `subject`'s activation caches live (one directory per hook)."""
    return subject.cache_root or ws.artifact("activations", subject.model_id)


def external_sae_steps(
    registry: SAERegistry,
    models: ModelService,
    sae_id: str,
    subject: Subject,
    dashboard_cfg: DashboardConfig,
    tokens_step: Step | None = None,
    tokens_key: str = "",
) -> list[Step]:
    """Steps that give a registered SAE its dashboards: its model's tokens of a dataset (`subject` is
    that model and dataset; `tokens_step` writes its tokens unless they are the world's), its hook's
    activation cache, then the same dashboard pass as for the SAEs trained here."""
    ws = registry.ws
    rec = registry.record(sae_id)
    dataset: Dataset = subject.dataset
    tokens_dir = subject.tokens_dir
    cache_cfg = ActivationCacheConfig(
        hook_name=rec.hook_name, max_train_tokens=dashboard_cfg.max_tokens, max_heldout_tokens=0
    )
    cache_dir = cache_root(ws, subject) / rec.hook_name
    cache_key = fingerprint(tokens_key, rec.model_id, cache_cfg.to_dict())
    existing = read_manifest(cache_dir)
    if existing and existing.get("splits", {}).get("train", {}).get("n_tokens", 0) > 0:
        cache_key = existing["key"]  # a cache of this hook already exists (e.g. the trained SAEs'): reuse it
    dash_key = fingerprint(DASHBOARDS_VERSION, sae_id, cache_key, dashboard_cfg.to_dict())

    def cache(ctx: JobContext) -> dict[str, Any]:
        toks = {s: load_tensors(tokens_dir / f"{s}.safetensors") for s in SPLITS}
        if ctx.fanout.distributed:  # the actors load the model; this process only writes the shards
            record = models.record(rec.model_id)
            assert record is not None, rec.model_id
            files = tuple((s, str((tokens_dir / f"{s}.safetensors").resolve())) for s in SPLITS)
            worker = CacheWorker(models.path(record), ws.settings.device, files, cache_cfg)
            m = write_activation_cache(
                worker,
                toks,
                cache_cfg,
                cache_dir,
                key=cache_key,
                progress=ctx.progress,
                meta={"model_id": rec.model_id, "domains": list(dataset.domains)},
                units=ctx.units(),
            )
            return {"dir": str(cache_dir), "train_tokens": m["splits"]["train"]["n_tokens"]}
        lm = models.get(rec.model_id)
        with lm.lock:
            m = write_activation_cache(
                lm.bridge,
                toks,
                cache_cfg,
                cache_dir,
                key=cache_key,
                progress=ctx.progress,
                meta={"model_id": rec.model_id, "domains": list(dataset.domains)},
            )
        return {"dir": str(cache_dir), "train_tokens": m["splits"]["train"]["n_tokens"]}

    def dashboards(ctx: JobContext) -> dict[str, Any]:
        lm = models.get(rec.model_id)
        input_ids = load_tensors(tokens_dir / "train.safetensors")["input_ids"]
        sae, _ = registry.load(sae_id)
        with lm.lock:
            return compute_dashboards(
                ws,
                sae_id,
                sae,
                lm.bridge,
                lm.tokenizer,
                ActivationCache(cache_dir),
                input_ids,
                dataset.domains,
                dashboard_cfg,
                registry.dashboard_dir(sae_id),
                dash_key,
                ctx.progress,
                ctx.units(),
                registry.sae_dir(sae_id),
            )

    steps = [tokens_step] if tokens_step is not None else []
    steps.append(
        Step(
            f"saes.cache.{rec.model_id}.{rec.hook_name}",
            f"cache {rec.hook_name}",
            cache_dir,
            cache,
            background=True,
            key=cache_key,
        )
    )
    steps.append(
        Step(
            f"saes.dashboards.{sae_id}",
            f"dashboards {sae_id}",
            registry.dashboard_dir(sae_id),
            dashboards,
            background=True,
            key=dash_key,
            committed=partial(ws.saes.dashboards_key, sae_id),
        )
    )
    return steps
