from fastapi import APIRouter
from pydantic import BaseModel

from loupe.api.deps import ModelsDep
from loupe.errors import NotFound

router = APIRouter(tags=["models"])


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


class ModelList(BaseModel):
    models: list[ModelInfo]


def _info(rec, loaded: bool) -> ModelInfo:
    return ModelInfo(id=rec.id, name=rec.name, source=rec.source, path=rec.path, loaded=loaded, **rec.config)


@router.get("/models", response_model=ModelList)
def list_models(models: ModelsDep) -> ModelList:
    return ModelList(models=[_info(r, models.is_loaded(r.id)) for r in models.records()])


@router.get("/models/{model_id}", response_model=ModelInfo)
def get_model(model_id: str, models: ModelsDep) -> ModelInfo:
    rec = models.record(model_id)
    if rec is None:
        raise NotFound(f"unknown model {model_id!r}")
    return _info(rec, models.is_loaded(model_id))
