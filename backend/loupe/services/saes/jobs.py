"""The jobs that make an SAE from the app, for any model, hook and dataset:

    train      tokens of the dataset for the model (if missing) -> the hook's activation cache ->
               training (sae-lens) -> quality on held-out tokens -> dashboards (SAEPipeline, one preset)
    register   an SAE from disk or sae-lens's registry -> tokens -> cache -> dashboards
    retry      the dashboard steps again, for an SAE whose dashboards failed or are missing

Each is a chain of INTERACTIVE jobs whose ids are known at once (and recorded on the SAE's row, so
its status follows them); DELETE /api/jobs/{id} cancels one and the rest of its chain."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

from loupe.errors import Conflict, Unprocessable
from loupe.jobs.pipeline import Pipeline, Step
from loupe.jobs.runner import INTERACTIVE, JobRunner
from loupe.services.datasets import DatasetService, Subject
from loupe.services.ids import ID_PATTERN, ID_RULE
from loupe.services.models import ModelService, hook_shapes
from loupe.services.saes.build import SAEPipeline, external_sae_steps
from loupe.services.saes.configs import ARCHITECTURES, DashboardConfig, SAETrainConfig
from loupe.services.saes.registry import SAERegistry
from loupe.storage.artifacts import digest, read_manifest
from loupe.storage.models import Job, SAERecord

MAX_EXPANSION = 64
MAX_D_SAE = 1 << 17
# the hooks an SAE is usually trained on: the residual stream, MLP and attention outputs
COMMON_HOOKS = re.compile(r"(hook_resid_(pre|mid|post)|hook_mlp_out|hook_attn_out|mlp\.hook_post)$")


class SAEJobs:
    def __init__(
        self,
        registry: SAERegistry,
        models: ModelService,
        datasets: DatasetService,
        runner: JobRunner,
        dashboard_cfg: DashboardConfig,
        world_presets: Sequence[SAETrainConfig] = (),
    ):
        self.registry = registry
        self.ws = registry.ws
        self.models = models
        self.datasets = datasets
        self.runner = runner
        self.dashboard_cfg = dashboard_cfg
        self.world_presets = list(world_presets)
        self._lock = threading.Lock()  # an identical request either joins a chain or makes it, never both

    # -- training ------------------------------------------------------------------------------
    def sae_hooks(self, model_id: str) -> dict[str, int]:
        """{hook: width} of the model's hooks that give one vector per token (what an SAE can read)."""
        shapes = hook_shapes(self.models.get(model_id))
        return {h: s[0] for h, s in shapes.items() if len(s) == 1 and s[0] > 1}

    def train(
        self,
        model_id: str,
        hook_name: str,
        dataset_id: str,
        architecture: str = "topk",
        expansion: int | None = None,
        d_sae: int | None = None,
        k: int = 32,
        train_tokens: int = 400_000,
        name: str | None = None,
        first_position: bool = False,
    ) -> tuple[SAERecord, list[Job]]:
        """Queue the training of a new SAE; returns its row (dashboards "building") and its jobs."""
        self.models.get(model_id)  # 404 for an unknown model, before any other check
        self.datasets.get(dataset_id)
        if architecture not in ARCHITECTURES:
            raise Unprocessable(f"architecture must be one of {', '.join(ARCHITECTURES)}, not {architecture!r}")
        hooks = self.sae_hooks(model_id)
        if hook_name not in hooks:
            common = [h for h in hooks if COMMON_HOOKS.search(h)] or list(hooks)
            raise Unprocessable(
                f"model {model_id!r} has no hook {hook_name!r} that an SAE can read; e.g. {', '.join(common[:6])}"
            )
        d_in = hooks[hook_name]
        expansion = _expansion(d_in, expansion, d_sae)
        width = expansion * d_in
        if width > MAX_D_SAE:
            raise Unprocessable(
                f"d_sae would be {width}; at most {MAX_D_SAE} (expansion x d_in = {expansion} x {d_in})"
            )
        if architecture != "standard" and not 1 <= k <= width:
            raise Unprocessable(f"k must be between 1 and d_sae ({width}), not {k}")
        request = digest(
            ["saes.train", model_id, hook_name, dataset_id, architecture, width, k, train_tokens, name, first_position]
        )
        with self._lock:
            joined = self.runner.active(request)
            if joined:  # the same request is being trained: its SAE and chain
                return self.registry.record(str(joined[0].params["sae_id"])), joined
            self.runner.check_room()  # before the SAE's row is made
            return self._train(
                request,
                model_id,
                hook_name,
                dataset_id,
                architecture,
                expansion,
                width,
                d_in,
                k,
                train_tokens,
                name,
                first_position,
            )

    def _train(
        self,
        request: str,
        model_id: str,
        hook_name: str,
        dataset_id: str,
        architecture: str,
        expansion: int,
        width: int,
        d_in: int,
        k: int,
        train_tokens: int,
        name: str | None,
        first_position: bool,
    ) -> tuple[SAERecord, list[Job]]:
        sae_id = name or self._default_id(model_id, hook_name, architecture, width)
        if not ID_PATTERN.match(sae_id):
            raise Unprocessable(f"name must be {ID_RULE}")
        if self.ws.saes.get(sae_id) is not None:
            raise Unprocessable(f"an SAE with id {sae_id!r} already exists; choose another name (or delete it first)")
        preset = SAETrainConfig(
            name=sae_id,
            hook_name=hook_name,
            architecture=architecture,
            expansion=expansion,
            k=k,
            train_tokens=train_tokens,
            batch_size=min(4096, max(128, train_tokens // 100)),  # about a hundred steps at least
            select_tokens=min(100_000, train_tokens),
            dead_feature_tokens=min(100_000, max(1, train_tokens // 4)),
            first_position=first_position,
        )
        subject = self.datasets.subject(model_id, dataset_id)
        pipeline = SAEPipeline(self.registry, subject, [preset], self.dashboard_cfg, sae_id=sae_id)
        self.ws.saes.upsert(
            sae_id,
            model_id=model_id,
            hook_name=hook_name,
            architecture=architecture,
            d_in=d_in,
            d_sae=width,
            source="trained",
            path=str(self.registry.sae_dir(sae_id)),
            dataset_id=dataset_id,
        )
        steps = [s for s in (self.datasets.tokens_step(subject), *pipeline.steps()) if s is not None]
        jobs = self._submit(sae_id, steps, {"model_id": model_id, "dataset_id": dataset_id}, request)
        return self.registry.record(sae_id), jobs

    def _default_id(self, model_id: str, hook_name: str, architecture: str, width: int) -> str:
        short = hook_name.replace("blocks.", "").replace("hook_", "")
        base = f"{model_id}-{short}-{architecture}-{width}"[:90]
        sae_id, n = base, 2
        while self.ws.saes.get(sae_id) is not None:
            sae_id, n = f"{base}-{n}", n + 1
        return sae_id

    def _submit(self, sae_id: str, steps: list[Step], params: dict[str, Any], dedupe: str | None = None) -> list[Job]:
        jobs = Pipeline(self.runner, steps).submit_chain(steps, INTERACTIVE, {"sae_id": sae_id, **params}, dedupe)
        self.registry.record_jobs(sae_id, [j.id for j in jobs])
        return self.ws.jobs.many([j.id for j in jobs])

    # -- SAEs from elsewhere ---------------------------------------------------------------------
    def register(
        self,
        sae_id: str,
        model_id: str | None,
        path: str | None = None,
        release: str | None = None,
        hub_sae_id: str | None = None,
        dataset_id: str | None = None,
        background: bool = True,
    ) -> tuple[SAERecord, list[Job]]:
        """Register an SAE from disk or sae-lens's registry and queue the jobs that build its dashboards
        on `dataset_id` (default: the world's dataset): its model's tokens, its hook's cache, the pass."""
        model_id = model_id or self.models.default_id()
        if model_id is None:
            raise Conflict("no model is registered yet: wait for the build to train the demo model (see /api/jobs)")
        dataset_id = dataset_id or (self.datasets.world.dataset.id if self.datasets.world else None)
        if dataset_id is None:
            raise Unprocessable("give dataset_id: the dataset to build the SAE's dashboards on (see /api/datasets)")
        self.datasets.get(dataset_id)
        if background:
            self.runner.check_room()  # before the SAE's row is made
        self.registry.register_external(sae_id, model_id, path, release, hub_sae_id)
        self.ws.saes.update(sae_id, dataset_id=dataset_id)
        steps = self._external_steps(self.registry.record(sae_id))
        if not background:
            Pipeline(self.runner, steps).run(steps)
            return self.registry.record(sae_id), []
        jobs = self._submit(sae_id, steps, {"model_id": model_id, "dataset_id": dataset_id})
        return self.registry.record(sae_id), jobs

    def _external_steps(self, rec: SAERecord) -> list[Step]:
        subject = self._subject(rec)
        return external_sae_steps(
            self.registry,
            self.models,
            rec.id,
            subject,
            self.dashboard_cfg,
            self.datasets.tokens_step(subject),
            self.datasets.tokens_key(subject),
        )

    def _subject(self, rec: SAERecord, n_ctx: int | None = None) -> Subject:
        world = self.datasets.world
        dataset_id = rec.dataset_id or (world.dataset.id if world else None)
        if dataset_id is None:
            raise Conflict(f"SAE {rec.id!r} names no dataset to build its dashboards on, and this world has none")
        return self.datasets.subject(rec.model_id, dataset_id, n_ctx)

    # -- retry -----------------------------------------------------------------------------------
    def retry_dashboards(self, sae_id: str) -> tuple[SAERecord, list[Job]]:
        """Queue the dashboard steps again (its model's tokens and hook cache first, where missing)."""
        rec = self.registry.record(sae_id)
        job = self.registry.busy(rec)
        if job is not None:  # a build of it is queued or running: the retry joins it
            return rec, self.registry.chain(rec) or [job]
        if self.registry.dashboards_ready(rec):
            raise Conflict(f"the dashboards of SAE {sae_id!r} are built; there is nothing to retry")
        manifest = read_manifest(self.registry.sae_dir(sae_id))
        if manifest is None:
            st = self.registry.status(rec)
            raise Conflict(
                f"SAE {sae_id!r} was never trained ({st.get('message') or 'its training did not finish'}); "
                "delete it and train it again"
            )
        if rec.source == "trained":
            preset = SAETrainConfig.from_dict(manifest["config"])
            subject = self._subject(rec, manifest.get("context_size"))
            pipeline = SAEPipeline(self.registry, subject, [preset], self.dashboard_cfg, sae_id=sae_id)
            wanted = {pipeline.job_name("cache", preset.hook_name), pipeline.job_name("dashboards", preset.name)}
            tokens = self.datasets.tokens_step(subject)
            steps = ([tokens] if tokens else []) + [s for s in pipeline.steps() if s.name in wanted]
        elif rec.source == "demo":
            world = self.datasets.world
            mine = next((p for p in self.world_presets if f"{rec.model_id}-{p.name}" == rec.id), None)
            if world is None or mine is None:
                raise Conflict(f"SAE {sae_id!r} is not one of this world's SAEs; its dashboards cannot be rebuilt here")
            pipeline = SAEPipeline(self.registry, world, self.world_presets, self.dashboard_cfg)
            wanted = {pipeline.job_name("cache", mine.hook_name), pipeline.job_name("dashboards", mine.name)}
            steps = [s for s in pipeline.steps() if s.name in wanted]
        else:
            steps = self._external_steps(rec)
        jobs = self._submit(sae_id, steps, {"model_id": rec.model_id, "dataset_id": rec.dataset_id})
        return self.registry.record(sae_id), jobs


def _expansion(d_in: int, expansion: int | None, d_sae: int | None) -> int:
    """The expansion factor from `expansion` or `d_sae` (a multiple of the hook's width d_in)."""
    if expansion is not None and d_sae is not None:
        raise Unprocessable("give expansion or d_sae, not both")
    if d_sae is not None:
        if d_sae < d_in or d_sae % d_in:
            raise Unprocessable(
                f"d_sae must be a multiple of the hook's width {d_in} (e.g. {4 * d_in} or {8 * d_in}), not {d_sae}"
            )
        expansion = d_sae // d_in
    expansion = 8 if expansion is None else expansion
    if not 1 <= expansion <= MAX_EXPANSION:
        raise Unprocessable(f"expansion must be between 1 and {MAX_EXPANSION}, not {expansion}")
    return expansion
