"""Jacobian spectra: training-Jacobian runs (Belrose & Scherlis 2024) and per-token layer Jacobians."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from loupe.api.bounds import Position, Seed
from loupe.api.deps import JacobianDep, LayersDep
from loupe.api.errors import errors
from loupe.api.jobs import QUEUE_FULL
from loupe.services.jacobian.runs import MAX_EPOCHS, MAX_PARAMS, N_TRAIN, PAPER, RunSettings, max_width

router = APIRouter(tags=["jacobian"], responses=errors(404, 409))


class RunSettingsIn(BaseModel):
    seed: Seed = Field(0, description="Initialisation seed (data split and batch order stay fixed).")
    width: int = Field(
        64,
        ge=1,
        le=MAX_PARAMS,  # a wider layer alone is over the parameter limit; the run's check says by how much
        description=f"Hidden width; the paper's 64 gives 4,810 parameters (at most {MAX_PARAMS:,} in all: "
        f"width <= {max_width(1)} at depth 1).",
    )
    depth: int = Field(1, ge=1, le=4, description="Hidden layers.")
    epochs: int = Field(25, ge=1, le=MAX_EPOCHS, description="Epochs of 25 batches (1,600 examples / 64).")
    batch_size: int = Field(64, ge=1, le=N_TRAIN, description="At most the training set.")
    lr: float = Field(
        0.1, gt=0, le=10, allow_inf_nan=False, description="Peak learning rate, cosine-decayed to 0; must be > 0."
    )
    momentum: float = Field(0.9, ge=0, lt=1, allow_inf_nan=False)
    control: Literal["none", "white_noise", "shuffled_labels"] = "none"
    experiments: bool = Field(True, description="Also run the perturbation experiment.")
    dtype: Literal["float64", "float32"] = "float64"
    init: Literal["lecun", "torch"] = Field(
        "lecun",
        description="theta_0: 'lecun' = the authors' code (Flax Dense defaults: truncated-normal weights "
        "with variance 1/fan_in, zero biases); 'torch' = PyTorch's nn.Linear default.",
    )


class RunStarted(BaseModel):
    run_id: str
    job_id: int | None
    status: str
    existing: bool


class RunListItem(BaseModel):
    run_id: str
    settings: dict[str, Any]
    status: str
    job_id: int | None = None
    progress: dict[str, Any] | None = None
    error: str | None = None
    summary: dict[str, Any] | None = None


class RunList(BaseModel):
    runs: list[RunListItem]
    defaults: dict[str, Any]
    max_params: int


class RunOut(BaseModel):
    run_id: str
    settings: dict[str, Any]
    n_params: int
    singular_values: list[float]
    alignment: list[float]
    regions: dict[str, Any]
    summary: dict[str, Any]
    metrics: dict[str, Any]
    perturbation: dict[str, Any] | None
    seed_overlap: list[dict[str, Any]]
    controls: list[str]
    seconds: dict[str, Any]
    figures: dict[str, Any]


class LayerRequest(BaseModel):
    prompt: str = Field(..., min_length=1, max_length=20_000)
    position: Position = Field(-1, description="Token position (negative counts from the end).")
    hook_in: str = Field("blocks.0.hook_resid_pre", description="The earlier activation (TransformerLens hook name).")
    hook_out: str = Field("blocks.1.hook_resid_post", description="The later activation.")
    model_id: str | None = None
    top_k: int = Field(8, ge=1, le=50)
    n_directions: int = Field(5, ge=1, le=32)


class LayerOut(BaseModel):
    model_id: str
    prompt_tokens: list[str]
    position: int
    token: str
    hook_in: str
    hook_out: str
    shape: list[int]
    singular_values: list[float]
    directions: list[dict[str, Any]]
    frobenius_norm: float
    seconds: float
    definition: str


@router.get("/jacobian/runs", response_model=RunList)
def list_runs(jacobian: JacobianDep) -> RunList:
    return RunList(
        runs=[RunListItem(**{k: r.get(k) for k in RunListItem.model_fields}) for r in jacobian.list()],
        defaults=PAPER,
        max_params=MAX_PARAMS,
    )


@router.post("/jacobian/runs", response_model=RunStarted, responses=QUEUE_FULL)
def start_run(body: RunSettingsIn, jacobian: JacobianDep) -> RunStarted:
    return RunStarted(**jacobian.start(RunSettings(**body.model_dump())))


@router.get("/jacobian/runs/{run_id}", response_model=RunOut)
def get_run(run_id: str, jacobian: JacobianDep) -> RunOut:
    return RunOut(**jacobian.get(run_id))


@router.post("/jacobian/layer", response_model=LayerOut)
async def layer(body: LayerRequest, layers: LayersDep) -> LayerOut:
    out = await run_in_threadpool(
        layers.layer,
        body.prompt,
        body.position,
        body.hook_in,
        body.hook_out,
        body.model_id,
        body.top_k,
        body.n_directions,
    )
    return LayerOut(**out)
