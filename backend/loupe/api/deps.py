"""The one dependency module: routers get the service container (made once by create_app) and the
services in it through these Annotated dependencies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from loupe.services.container import Container
from loupe.services.datasets import DatasetService
from loupe.services.finetune import FineTuneService
from loupe.services.generation import GenerationService
from loupe.services.influence.service import InfluenceService
from loupe.services.jacobian.layer import LayerJacobianService
from loupe.services.jacobian.service import JacobianService
from loupe.services.model_diff import ModelDiffService
from loupe.services.models import ModelService
from loupe.services.saes.features import FeatureService
from loupe.services.saes.jobs import SAEJobs
from loupe.services.saes.registry import SAERegistry
from loupe.services.steering.live import LiveEditService
from loupe.services.steering.service import SteeringService
from loupe.services.steering.vectors import VectorStore


def container(request: Request) -> Container:
    c: Container = request.app.state.container
    return c


def _part(name: str) -> Callable[[Request], Any]:
    def part(request: Request) -> Any:
        return getattr(container(request), name)

    return part


ContainerDep = Annotated[Container, Depends(container)]
ModelsDep = Annotated[ModelService, Depends(_part("models"))]
GenerationDep = Annotated[GenerationService, Depends(_part("generation"))]
SAEsDep = Annotated[SAERegistry, Depends(_part("saes"))]
SAEJobsDep = Annotated[SAEJobs, Depends(_part("sae_jobs"))]
DatasetsDep = Annotated[DatasetService, Depends(_part("datasets"))]
FeaturesDep = Annotated[FeatureService, Depends(_part("features"))]
VectorsDep = Annotated[VectorStore, Depends(_part("vectors"))]
SteeringDep = Annotated[SteeringService, Depends(_part("steering"))]
LiveDep = Annotated[LiveEditService, Depends(_part("live"))]
InfluenceDep = Annotated[InfluenceService, Depends(_part("influence"))]
JacobianDep = Annotated[JacobianService, Depends(_part("jacobian"))]
LayersDep = Annotated[LayerJacobianService, Depends(_part("layers"))]
FineTunesDep = Annotated[FineTuneService, Depends(_part("finetunes"))]
DiffsDep = Annotated[ModelDiffService, Depends(_part("diffs"))]
