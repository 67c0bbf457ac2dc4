from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from loupe.api.deps import ModelsDep
from loupe.api.errors import errors
from loupe.errors import NotFound

router = APIRouter(tags=["models"])


class ChatFormatInfo(BaseModel):
    """How one user instruction is written for the model: `user + instruction + assistant`."""

    template: bool = Field(..., description="Derived from the tokenizer's chat template (else the plain format).")
    user: str
    assistant: str


class ModelInfo(BaseModel):
    id: str
    name: str
    source: str
    path: str
    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    n_ctx: int
    d_vocab: int
    n_params: int
    hook_names: list[str]
    loaded: bool
    chat: ChatFormatInfo | None = Field(
        None, description="The one-turn chat format (null if its tokenizer is unreadable)."
    )
    parent: str | None = Field(None, description="The model it was fine-tuned from (null: not made by Loupe).")
    lineage: dict[str, Any] | None = Field(
        None, description="A fine-tune's parent, dataset_id, method and settings (POST /api/finetunes)."
    )


class ModelList(BaseModel):
    models: list[ModelInfo]
    default_id: str | None = Field(None, description="The model of requests that name none (the world's).")


def _info(rec, models) -> ModelInfo:
    try:
        fmt = models.chat_format(rec.id)
        chat = ChatFormatInfo(template=fmt.template, user=fmt.user, assistant=fmt.assistant)
    except (OSError, ValueError):  # a directory that lost its tokenizer still lists
        chat = None
    return ModelInfo(
        id=rec.id,
        name=rec.name,
        source=rec.source,
        path=models.path(rec),
        loaded=models.is_loaded(rec.id),
        chat=chat,
        parent=(rec.config.get("lineage") or {}).get("parent"),
        **rec.config,
    )


@router.get("/models", response_model=ModelList)
def list_models(models: ModelsDep) -> ModelList:
    return ModelList(models=[_info(r, models) for r in models.records()], default_id=models.default_id())


@router.get("/models/{model_id}", response_model=ModelInfo, responses=errors(404))
def get_model(model_id: str, models: ModelsDep) -> ModelInfo:
    rec = models.record(model_id)
    if rec is None:
        raise NotFound(f"unknown model {model_id!r}")
    return _info(rec, models)
