"""The steering analysis as a build step: a subject's refusal direction, vector `<model_id>-refusal`
(named `refusal`), from its dataset's train-split instructions.

When no candidate passes Arditi et al.'s filters (the micro world's seconds-trained model does not refuse
at all, so no direction induces refusal), the step keeps the best candidate within the KL bound, flagged
`passed: false` with the reason (the vector list and the Steer page say so), so that the world still has
a direction whose interventions can be shown; it never keeps one past the KL bound (a model-breaking
ablation), and saves nothing when every candidate is past it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loupe.jobs.pipeline import Step
from loupe.jobs.runner import JobContext
from loupe.services.datasets import Subject
from loupe.services.models import ModelService
from loupe.services.steering.direction import compute_refusal_direction, outcome
from loupe.services.steering.vectors import VectorStore

REFUSAL_VECTOR_NAME = "refusal"


@dataclass(frozen=True)
class SteeringConfig:
    n_direction: int = 256  # instructions per side for the means
    n_select: int = 64  # instructions per side for the selection scores
    layer_stride: int = 1  # candidate layers: every n-th block's resid_pre (and the last resid_post)
    dense_from: float | None = None  # and every block from this fraction of the depth to the selection's bound


def refusal_vector_id(model_id: str) -> str:
    return f"{model_id}-{REFUSAL_VECTOR_NAME}"


def refusal_step(models: ModelService, vectors: VectorStore, subject: Subject, cfg: SteeringConfig) -> Step:
    key = f"{subject.model_key}-refusal-v3-{cfg.n_direction}-{cfg.n_select}-{cfg.layer_stride}"
    if cfg.dense_from is not None:
        key += f"-dense{cfg.dense_from}"
    vid = refusal_vector_id(subject.model_id)

    def body(ctx: JobContext) -> dict[str, Any]:
        ctx.progress(0, None, "loading model")
        lm = models.get(subject.model_id)
        harmful, harmless = subject.dataset.instruction_sets("train", shuffle_seed=subject.seed)
        n, k = cfg.n_direction, cfg.n_select
        res = compute_refusal_direction(
            lm,
            harmful[:n],
            harmless[:n],
            harmful[n : n + k],
            harmless[n : n + k],
            progress=ctx.progress,
            layer_stride=cfg.layer_stride,
            dense_from=cfg.dense_from,
        )
        out = outcome(res)
        if res["hook"] is None:
            vectors.save_none(vid, out, key=key)
            return {"vector_id": None, **out}
        vectors.save_direction(vid, REFUSAL_VECTOR_NAME, lm.id, res, "build", key=key)
        return {"vector_id": vid, **out}

    return Step("steering.refusal", "refusal direction", vectors.dir(vid), body, background=True, key=key)
