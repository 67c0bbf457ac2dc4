"""Annotated dependencies the routers take."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from loupe.services.generation import GenerationService
from loupe.services.models import ModelService
from loupe.services.workspace import Workspace
from loupe.settings import Settings


def _ws(request: Request) -> Workspace:
    return request.app.state.workspace


def _settings(request: Request) -> Settings:
    return request.app.state.workspace.settings


def _models(request: Request) -> ModelService:
    return request.app.state.models


def _generation(request: Request) -> GenerationService:
    return request.app.state.generation


WorkspaceDep = Annotated[Workspace, Depends(_ws)]
SettingsDep = Annotated[Settings, Depends(_settings)]
ModelsDep = Annotated[ModelService, Depends(_models)]
GenerationDep = Annotated[GenerationService, Depends(_generation)]
