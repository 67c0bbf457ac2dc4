from fastapi import APIRouter
from pydantic import BaseModel

from loupe import __version__
from loupe.api.deps import ModelsDep, WorkspaceDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    version: str
    workspace: str
    database: str
    model_ready: bool


@router.get("/health", response_model=Health)
def health(ws: WorkspaceDep, models: ModelsDep) -> Health:
    return Health(
        status="ok",
        version=__version__,
        workspace=str(ws.settings.workspace.resolve()),
        database=ws.db.dialect,
        model_ready=models.default_id() is not None,
    )
