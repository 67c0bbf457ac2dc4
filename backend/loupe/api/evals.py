from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from loupe.api.deps import ContainerDep

router = APIRouter(tags=["evals"])


class EvalOut(BaseModel):
    id: int
    kind: str
    model_id: str
    created_at: datetime
    results: dict[str, Any]


class EvalList(BaseModel):
    evals: list[EvalOut]


@router.get("/evals", response_model=EvalList)
def list_evals(c: ContainerDep, kind: str | None = None, limit: int = Query(20, ge=1, le=200)) -> EvalList:
    rows = c.ws.evals.list(kind=kind, limit=limit)
    return EvalList(
        evals=[
            EvalOut(id=r.id, kind=r.kind, model_id=r.model_id, created_at=r.created_at, results=r.results) for r in rows
        ]
    )
