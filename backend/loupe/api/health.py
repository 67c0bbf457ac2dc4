from fastapi import APIRouter
from pydantic import BaseModel

from loupe import __version__
from loupe.api.deps import ContainerDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    version: str
    workspace: str
    database: str
    model_ready: bool
    world: str  # the built-in world this server builds (LOUPE_WORLD)
    world_model_id: str | None  # the model that world's analyses are of


@router.get("/health", response_model=Health)
def health(c: ContainerDep) -> Health:
    return Health(
        status="ok",
        version=__version__,
        workspace=str(c.settings.workspace.resolve()),
        database=c.ws.db.dialect,
        model_ready=c.models.default_id() is not None,
        world=c.settings.world,
        world_model_id=c.subject.model_id if c.subject else None,
    )
