"""The service container: made once per process (by create_app and by the CLI), it owns every
long-lived object (settings, the workspace's database and artifacts, the job runner, the model and
SAE registries, the vector store) and the services built on them. Services get their collaborators
from here, never by importing each other's globals.

A world (loupe.worlds) hands it the subject its analyses run on (a model and a dataset) and the
analyses to build, as data; the container knows nothing of how that model or dataset was made."""

from __future__ import annotations

from dataclasses import dataclass, field

from loupe.jobs.executors import Executor
from loupe.jobs.fanout import Fanout, make_fanout
from loupe.jobs.pipeline import Step
from loupe.jobs.runner import JobRunner
from loupe.services.datasets import DatasetService, Subject
from loupe.services.finetune import FineTuneService
from loupe.services.generation import GenerationService
from loupe.services.influence.build import InfluencePipeline
from loupe.services.influence.config import InfluenceConfig
from loupe.services.influence.service import InfluenceService
from loupe.services.jacobian.build import training_jacobian_step
from loupe.services.jacobian.layer import LayerJacobianService
from loupe.services.jacobian.runs import RunSettings
from loupe.services.jacobian.service import JacobianService
from loupe.services.model_diff import ModelDiffService
from loupe.services.models import ModelService
from loupe.services.saes.build import SAEPipeline
from loupe.services.saes.configs import DashboardConfig, SAETrainConfig
from loupe.services.saes.features import FeatureService
from loupe.services.saes.jobs import SAEJobs
from loupe.services.saes.registry import SAERegistry
from loupe.services.steering.build import SteeringConfig, refusal_step
from loupe.services.steering.interventions import PlanBuilder
from loupe.services.steering.live import LiveEditService
from loupe.services.steering.service import SteeringService
from loupe.services.steering.vectors import VectorStore
from loupe.services.workspace import Workspace
from loupe.settings import Settings
from loupe.storage.models import SAERecord


@dataclass(frozen=True)
class Analyses:
    """What a world asks the services to build for its subject, as configs (None or empty: skip)."""

    steering: SteeringConfig | None = None
    saes: tuple[SAETrainConfig, ...] = ()
    dashboards: DashboardConfig = field(default_factory=DashboardConfig)
    influence: InfluenceConfig | None = None  # query settings; also built when `build_influence`
    build_influence: bool = True
    jacobian: RunSettings | None = None


class Container:
    def __init__(
        self,
        settings: Settings,
        ws: Workspace,
        subject: Subject | None = None,
        analyses: Analyses | None = None,
        executor: Executor | None = None,
        default_model: str | None = None,
        fanout: Fanout | None = None,
    ):
        self.settings = settings
        self.ws = ws
        self.subject = subject
        self.analyses = analyses or Analyses()
        self._own_fanout = fanout is None  # one handed in (tests share a Ray) outlives this container
        fanout = fanout or make_fanout(
            settings.executor, settings.ray_address, settings.ray_workers, settings.ray_object_store_mb
        )
        self.jobs = JobRunner(ws.jobs, executor, max_queued=settings.max_queued_jobs, fanout=fanout)
        self.models = ModelService(ws, default_model or (subject.model_id if subject else None))
        self.saes = SAERegistry(ws, self.models)
        self.saes.restore()
        self.datasets = DatasetService(ws, self.models, subject)
        self.sae_jobs = SAEJobs(
            self.saes, self.models, self.datasets, self.jobs, self.analyses.dashboards, self.analyses.saes
        )
        self.vectors = VectorStore(ws, self.models)
        self.vectors.restore()
        self.plans = PlanBuilder(self.vectors, self.saes)
        self.generation = GenerationService(self.models, self.plans, settings.max_new_tokens)
        self.live = LiveEditService(self.models, self.plans, settings.max_prompt_chars)
        self.features = FeatureService(ws, self.models, self.saes)
        self.steering = SteeringService(ws, self.models, self.vectors, self.jobs, self.datasets)
        self.finetunes = FineTuneService(ws, self.models, self.datasets, self.jobs)
        self.diffs = ModelDiffService(ws, self.models, self.datasets, self.saes, self.jobs)
        self.influence = InfluenceService(
            ws, self.saes, subject, self.analyses.influence, self.models, self.datasets, self.jobs
        )
        self.jacobian = JacobianService(ws, self.jobs, self.analyses.jacobian)
        self.layers = LayerJacobianService(self.models, self.saes)

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        subject: Subject | None = None,
        analyses: Analyses | None = None,
        executor: Executor | None = None,
        default_model: str | None = None,
    ) -> Container:
        """A container on the workspace of `settings`."""
        return cls(settings, Workspace.open(settings), subject, analyses, executor, default_model)

    # -- the analyses as build steps --------------------------------------------------------------
    def sae_pipeline(self) -> SAEPipeline:
        assert self.subject is not None, "the SAE analysis needs a subject (a model and a dataset)"
        return SAEPipeline(self.saes, self.subject, self.analyses.saes, self.analyses.dashboards)

    def influence_pipeline(self) -> InfluencePipeline:
        """The world's own influence index (its model and the tokens it was trained on)."""
        ref = self.influence.world_ref()
        assert ref is not None, "the world builds no influence index"
        return self.influence.pipeline(ref)

    def analysis_steps(self) -> list[Step]:
        """The background steps of every analysis the world asked for, in build order."""
        a, subject = self.analyses, self.subject
        if subject is None:
            return []
        steps: list[Step] = []
        if a.steering is not None:
            steps.append(refusal_step(self.models, self.vectors, subject, a.steering))
        if a.saes:
            steps += self.sae_pipeline().steps()
        if a.influence is not None and a.build_influence:
            steps += self.influence_pipeline().steps()
        if a.jacobian is not None:
            steps.append(training_jacobian_step(self.jacobian, a.jacobian))
        return steps

    # -- SAEs from elsewhere ------------------------------------------------------------------------
    def register_sae(
        self,
        sae_id: str,
        model_id: str | None,
        path: str | None = None,
        release: str | None = None,
        hub_sae_id: str | None = None,
        background: bool = True,
        dataset_id: str | None = None,
    ) -> SAERecord:
        """Register an SAE from disk or sae-lens's registry and queue the jobs that build its
        dashboards (SAEJobs.register)."""
        return self.sae_jobs.register(sae_id, model_id, path, release, hub_sae_id, dataset_id, background)[0]

    def close(self) -> None:
        self.jobs.shutdown()
        if self._own_fanout:
            self.jobs.fanout.shutdown()  # a local Ray this process started stops with it
        self.ws.close()
