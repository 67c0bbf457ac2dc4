"""Fine-tuning a registered model on a dataset (full or LoRA) into a new model, as a job."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from loupe.api.bounds import MAX_LAYER
from loupe.api.deps import FineTunesDep
from loupe.api.errors import errors
from loupe.api.jobs import QUEUE_FULL
from loupe.services.finetune import FineTuneConfig, loss_figure

router = APIRouter(tags=["finetune"], responses=errors(404))


class FineTuneIn(BaseModel):
    parent: str = Field(..., description="The registered model to start from.")
    dataset_id: str = Field(
        ..., description="Its train split: conversations train the assistant's turns, texts all their tokens."
    )
    model_id: str = Field(..., description="The new model's id.")
    method: Literal["lora", "full"] = "lora"
    max_steps: int = Field(200, ge=1, le=100_000)
    learning_rate: float | None = Field(None, gt=0, le=1.0, description="Default: 2e-4 for LoRA, 2e-5 for full.")
    batch_size: int = Field(8, ge=1, le=256)
    max_length: int = Field(256, ge=8, le=8192, description="Tokens per example; longer ones are cut.")
    lora_r: int = Field(8, ge=1, le=512)
    lora_alpha: int = Field(16, ge=1, le=4096)
    target_modules: list[str] | None = Field(
        None,
        max_length=64,
        description='LoRA target modules (e.g. ["q_proj", "v_proj"] or ["all-linear"]); default: peft\'s for the '
        "architecture",
    )
    lora_layers: list[Annotated[int, Field(ge=0, le=MAX_LAYER)]] | None = Field(
        None,
        max_length=1024,
        description="LoRA only in these blocks (default: all); upper blocks only also shortens the backward pass",
    )
    save_steps: int = Field(50, ge=1, le=100_000, description="A checkpoint every this many steps (for resuming).")
    seed: int = Field(0, ge=0, le=2**31 - 1)


class FineTuneStarted(BaseModel):
    job_id: int
    model_id: str


class LossPoint(BaseModel):
    step: int
    loss: float


class FineTuneRun(BaseModel):
    model_id: str
    parent: str
    dataset_id: str
    config: dict[str, Any]
    job_id: int
    status: str
    message: str
    error: str | None
    loss: list[LossPoint]
    heldout_loss_before: float | None
    heldout_loss_after: float | None
    registered: bool = Field(description="whether the tuned model is registered (the job finished)")


class FineTuneRunDetail(FineTuneRun):
    figure: dict[str, Any] = Field(description="the loss curve (plotly)")


class FineTuneList(BaseModel):
    runs: list[FineTuneRun]


@router.post("/finetunes", response_model=FineTuneStarted, status_code=202, responses=QUEUE_FULL)
def start_finetune(body: FineTuneIn, ft: FineTunesDep) -> FineTuneStarted:
    """Queue a fine-tune; follow it at GET /api/finetunes/{model_id} (loss so far) or /api/jobs/{job_id};
    cancel it with DELETE /api/jobs/{job_id}. When it finishes, the tuned model is registered with its
    `parent` and `lineage`."""
    cfg = FineTuneConfig.from_dict(body.model_dump(exclude={"parent", "dataset_id", "model_id"}))
    job = ft.start(body.parent, body.dataset_id, body.model_id, cfg)
    return FineTuneStarted(job_id=job.id, model_id=body.model_id)


@router.get("/finetunes", response_model=FineTuneList)
def list_finetunes(ft: FineTunesDep) -> FineTuneList:
    return FineTuneList(runs=[FineTuneRun(**r) for r in ft.runs()])


@router.get("/finetunes/{model_id}", response_model=FineTuneRunDetail)
def get_finetune(model_id: Annotated[str, Path(max_length=100)], ft: FineTunesDep) -> FineTuneRunDetail:
    run = ft.run(model_id)
    return FineTuneRunDetail(**run, figure=loss_figure(run))
