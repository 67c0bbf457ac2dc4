"""Worlds: a model source plus a dataset plus the analyses to build, as data.

A world names the subject every analysis runs on (a model and a dataset in its tokens), the steps
that make that subject (the demo world trains its own model on its own corpus), and the analyses to
build for it (loupe.worlds.presets). `open_world(settings)` gives the world and the service container
made for it; `Build` runs its steps, in the foreground (CLI) or as background jobs (the server)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loupe.core.config import Progress
from loupe.demo.world import world_config
from loupe.jobs.executors import Executor
from loupe.jobs.fanout import Fanout
from loupe.jobs.pipeline import Pipeline, Step
from loupe.jobs.runner import BUILD, JobContext
from loupe.services.container import Analyses, Container
from loupe.services.datasets import Subject
from loupe.services.workspace import Workspace
from loupe.settings import Settings
from loupe.worlds.demo import DemoSource
from loupe.worlds.presets import analyses
from loupe.worlds.smollm2 import SmolLM2Config, SmolLM2Source

EXTERNAL_MODEL_ID = "external"


@dataclass(frozen=True)
class World:
    name: str
    subject: Subject
    analyses: Analyses
    source_steps: Callable[[Container], list[Step]]  # make the subject's model and dataset
    ensure_registered: Callable[[Container], None]  # a built model gets its registry row
    evaluate: Callable[[JobContext, Container], dict[str, Any]]  # the behaviour eval (`loupe eval demo`)


def load_world(settings: Settings) -> World:
    """The built-in world `settings.world` with `settings.world_overrides` applied."""
    if settings.world == "smollm2":
        scfg = SmolLM2Config.from_dict({"seed": settings.seed, **settings.world_overrides})
        real = SmolLM2Source(settings, scfg)
        return World(
            scfg.name, real.subject, analyses(scfg.name, None), real.steps, real.ensure_registered, real.evaluate
        )
    cfg = world_config(settings.world, **{"seed": settings.seed, **settings.world_overrides})
    source = DemoSource(settings, cfg)
    return World(
        cfg.name,
        source.subject,
        analyses(cfg.name, cfg.eval_limit),
        source.steps,
        source.ensure_registered,
        source.evaluate,
    )


def open_world(
    settings: Settings, ws: Workspace | None = None, *, executor: Executor | None = None, fanout: Fanout | None = None
) -> tuple[World, Container]:
    """The world of `settings` and the service container made for it (one per process); `executor`
    runs its jobs (default: the container's, a thread pool), `fanout` their units (default: the one
    LOUPE_EXECUTOR names)."""
    world = load_world(settings)
    default = EXTERNAL_MODEL_ID if settings.model else None
    c = Container(
        settings,
        ws or Workspace.open(settings),
        world.subject,
        world.analyses,
        executor=executor,
        default_model=default,
        fanout=fanout,
    )
    return world, c


def register_external_model(c: Container) -> bool:
    """Register `settings.model` (LOUPE_MODEL: a Hugging Face directory or hub name) as the model
    `external` unless it already is; True when it registered it now. `loupe run`, `loupe build` and
    `loupe serve` all do this, so the server never answers 'no model' for a model it was given."""
    path = c.settings.model
    if not path or c.models.record(EXTERNAL_MODEL_ID) is not None:
        return False
    source = "hf-dir" if Path(path).is_dir() else "hub"
    c.models.register(EXTERNAL_MODEL_ID, path, source, name=Path(path).name)
    return True


class Build:
    """A world's steps for one container: the source first (foreground), then the analyses (background)."""

    def __init__(self, world: World, c: Container):
        self.world = world
        self.container = c
        self.pipeline = Pipeline(c.jobs, world.source_steps(c) + c.analysis_steps())

    @property
    def steps(self) -> list[Step]:
        return self.pipeline.steps

    def run(
        self,
        background: bool | None = None,
        *,
        listener_for: Callable[[Step], Progress] | None = None,
        on_skip: Callable[[Step], None] | None = None,
        on_done: Callable[[Step], None] | None = None,
    ) -> None:
        """Run the steps (all, or only the foreground or background ones) in this thread; the callbacks
        are Pipeline.run's."""
        steps = [s for s in self.steps if background is None or s.background == background]
        self.pipeline.run(steps, listener_for, on_skip, on_done)
        self.world.ensure_registered(self.container)

    def submit_background(self) -> bool:
        """Queue the pending background steps as jobs, once the foreground ones are built."""
        pending = self.pipeline.pending(background=True)
        if not pending or self.pipeline.pending(background=False):
            return False
        self.pipeline.submit(pending, priority=BUILD)
        return True
