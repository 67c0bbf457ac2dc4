"""Model diffing: what changed between a fine-tuned model and its parent (weights, activations, SAE
features, refusal directions), as a job."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from loupe.api.bounds import MAX_PROMPTS
from loupe.api.deps import DiffsDep
from loupe.api.errors import errors
from loupe.api.jobs import QUEUE_FULL
from loupe.services.model_diff import DiffConfig, diff_figures

router = APIRouter(tags=["diffs"], responses=errors(404))

Status = Literal["queued", "running", "done", "failed"]


class DiffIn(BaseModel):
    model_id: str = Field(..., max_length=100, description="The tuned model.")
    parent_id: str | None = Field(None, max_length=100, description="Default: the parent its lineage records.")
    dataset_id: str = Field(
        ...,
        max_length=100,
        description="Tokens to compare activations on (conversations written with the parent's chat template); "
        "its harmful and harmless train instructions, where it has them, give the refusal directions.",
    )
    sae_id: str | None = Field(
        None, max_length=100, description="An SAE of the parent (default: its first; none: no feature part)."
    )
    split: Literal["train", "heldout"] = "train"
    n_tokens: int = Field(4096, ge=16, le=200_000, description="Tokens compared (whole sequences, at least this many).")
    n_instructions: int = Field(64, ge=2, le=MAX_PROMPTS, description="Harmful and as many harmless instructions.")
    layer_stride: int = Field(1, ge=1, le=64, description="Refusal directions at every n-th block.")
    batch_size: int = Field(8, ge=1, le=256, description="Sequences per forward pass.")
    top_k: int = Field(50, ge=1, le=1000, description="Features listed per ranking.")


class DiffStarted(BaseModel):
    diff_id: str
    job_id: int | None = Field(description="null when this diff was computed before (its result is ready)")
    status: Status


class LayerWeight(BaseModel):
    relative: float | None = Field(description="||W_child - W_parent||_F / ||W_parent||_F over the block's tensors")
    diff_norm: float
    norm: float
    n_params: int
    top_param: str | None = Field(description="its most changed tensor (null: none changed)")
    top_relative: float | None


class ParamChange(BaseModel):
    name: str
    layer: int | None
    shape: list[int]
    norm: float
    diff_norm: float
    relative: float | None


class Weights(BaseModel):
    layers: list[LayerWeight]
    outside: LayerWeight = Field(description="embeddings, final norm, unembedding")
    params: list[ParamChange] = Field(description="every tensor, most changed first")


class LayerActivation(BaseModel):
    layer: int
    hook: str
    relative_l2: float = Field(description="mean over tokens of ||h_child - h_parent|| / ||h_parent||")
    cosine: float = Field(description="mean over tokens of cos(h_parent, h_child)")
    pooled_relative: float = Field(description="sqrt(sum ||h_child - h_parent||^2 / sum ||h_parent||^2)")
    n_tokens: int


class Activations(BaseModel):
    split: str
    n_sequences: int
    n_tokens: int
    layers: list[LayerActivation]


class FeatureChange(BaseModel):
    index: int
    mean_parent: float
    mean_child: float
    freq_parent: float
    freq_child: float
    delta_mean: float
    delta_freq: float
    standardized: float = Field(description="delta_mean / the pooled standard deviation (Cohen's d)")
    label: str | None = None


class Features(BaseModel):
    sae_id: str | None
    hook_name: str | None = None
    d_sae: int | None = None
    skipped: str | None = Field(description="why there is no feature part, or null")
    n_tokens: int | None = None
    n_changed: int | None = None
    top: dict[str, list[FeatureChange]] | None = Field(
        None,
        description="by ranking (delta_mean, standardized, delta_freq): the most changed features, largest |change| first",
    )


class RefusalLayer(BaseModel):
    hook: str
    layer: int
    cosine: list[float | None] = Field(description="per post-instruction position; null where a direction is zero")
    norm_parent: list[float]
    norm_child: list[float]


class Refusal(BaseModel):
    skipped: str | None = Field(description="why there is no refusal part, or null")
    n_harmful: int | None = None
    n_harmless: int | None = None
    positions: list[str] | None = None
    massive_dims: list[int] | None = None
    layers: list[RefusalLayer] | None = None


class DiffResult(BaseModel):
    diff_id: str
    model_id: str
    parent_id: str
    dataset_id: str
    config: dict[str, Any]
    n_layers: int
    weights: Weights
    activations: Activations
    features: Features
    refusal: Refusal
    seconds: dict[str, float] = Field(
        default_factory=dict, description="time of each part: weights, activations (with the SAE), refusal"
    )


class DiffProgress(BaseModel):
    done: float
    total: float | None
    message: str


class DiffOut(BaseModel):
    diff_id: str
    status: Status
    job_id: int | None
    error: str | None
    progress: DiffProgress | None
    params: dict[str, Any] | None
    result: DiffResult | None = Field(description="once done")
    figures: dict[str, Any] | None = Field(
        description="plotly figures once done: weights (bars per block), activations (per block), refusal (per layer; null when skipped)"
    )


class DiffSummary(BaseModel):
    diff_id: str
    model_id: str | None
    parent_id: str | None
    dataset_id: str | None
    sae_id: str | None
    status: Status
    job_id: int
    created_at: datetime


class DiffList(BaseModel):
    diffs: list[DiffSummary]


@router.post("/diffs", response_model=DiffStarted, status_code=202, responses={**QUEUE_FULL, **errors(409)})
def start_diff(body: DiffIn, diffs: DiffsDep) -> DiffStarted:
    """Compare a tuned model with its parent on a dataset, as a job; the result at GET /api/diffs/{diff_id}.
    The same request again answers the finished diff, or joins the running job."""
    cfg = DiffConfig(
        split=body.split,
        n_tokens=body.n_tokens,
        n_instructions=body.n_instructions,
        layer_stride=body.layer_stride,
        batch_size=body.batch_size,
        top_k=body.top_k,
    )
    out = diffs.start(body.model_id, body.dataset_id, body.parent_id, body.sae_id, cfg)
    return DiffStarted(**out)


@router.get("/diffs", response_model=DiffList)
def list_diffs(diffs: DiffsDep) -> DiffList:
    return DiffList(diffs=[DiffSummary(**d) for d in diffs.list()])


@router.get("/diffs/{diff_id}", response_model=DiffOut)
def get_diff(diff_id: Annotated[str, Path(max_length=100)], diffs: DiffsDep) -> DiffOut:
    d = diffs.get(diff_id)
    return DiffOut(**d, figures=diff_figures(d["result"]) if d["result"] else None)
