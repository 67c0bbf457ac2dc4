from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from loupe.api.bounds import Id
from loupe.api.deps import ContainerDep
from loupe.api.errors import ErrorOut, errors
from loupe.errors import Conflict, NotFound

router = APIRouter(tags=["jobs"])

# what an endpoint that starts jobs may answer besides its success: the queue is full
QUEUE_FULL: dict[int | str, dict[str, Any]] = {
    429: {
        "description": "The job queue is full (LOUPE_MAX_QUEUED_JOBS jobs wait): try again after Retry-After "
        "seconds. An identical request joins the job already queued or running instead.",
        "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
        "model": ErrorOut,
    }
}


class Progress(BaseModel):
    done: float
    total: float | None
    message: str


class JobOut(BaseModel):
    id: int
    kind: str
    name: str
    status: Literal["queued", "running", "done", "failed"]
    progress: Progress
    params: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    artifacts: dict[str, Any]


class JobList(BaseModel):
    jobs: list[JobOut]


def job_out(j) -> JobOut:
    return JobOut(
        id=j.id,
        kind=j.kind,
        name=j.name,
        status=j.status,
        progress=Progress(done=j.progress_done, total=j.progress_total, message=j.message or ""),
        params=j.params or {},
        created_at=j.created_at,
        started_at=j.started_at,
        finished_at=j.finished_at,
        error=j.error,
        artifacts=j.artifacts or {},
    )


@router.get("/jobs", response_model=JobList)
def list_jobs(c: ContainerDep, kind: str | None = None, limit: int = Query(200, ge=1, le=1000)) -> JobList:
    return JobList(jobs=[job_out(j) for j in c.ws.jobs.list(limit=limit, kind=kind)])


@router.get("/jobs/{job_id}", response_model=JobOut, responses=errors(404))
def get_job(job_id: Id, c: ContainerDep) -> JobOut:
    job = c.ws.jobs.get(job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id}")
    return job_out(job)


@router.delete("/jobs/{job_id}", response_model=JobOut, status_code=202, responses=errors(404, 409))
def cancel_job(job_id: Id, c: ContainerDep) -> JobOut:
    """Cancel a queued or running job: a queued one is failed at once ("cancelled"), a running one stops
    at its next progress report and writes no artifact."""
    job = c.ws.jobs.get(job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id}")
    if job.status not in ("queued", "running"):
        raise Conflict(f"job {job_id} is {job.status}; only a queued or running job can be cancelled")
    if not c.jobs.cancel(job_id):
        raise Conflict(f"job {job_id} does not run in this server process (it was started by another one)")
    return job_out(c.ws.jobs.get(job_id) or job)
