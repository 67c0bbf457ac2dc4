"""The training-Jacobian analysis as a build step: one run, whose job is named like the service's
jobs (``jacobian.<run_id>``), so the Jacobian page shows it and never starts it twice."""

from __future__ import annotations

from loupe.jobs.pipeline import Step
from loupe.services.jacobian.runs import RunSettings
from loupe.services.jacobian.service import JacobianService


def training_jacobian_step(svc: JacobianService, run: RunSettings) -> Step:
    return Step(
        svc.job_name(run.run_id),
        "training Jacobian (paper settings)",
        svc.run_dir(run.run_id),
        lambda ctx: svc.compute(run, ctx.progress, ctx.units()),
        background=True,
        key=run.run_id,
    )
