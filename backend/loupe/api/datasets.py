"""Datasets: the world's own and the ones people register (upload a JSONL, text or parquet file)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncGenerator
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from loupe.api.deps import DatasetsDep
from loupe.api.errors import errors
from loupe.errors import TooLarge, Unprocessable

router = APIRouter(tags=["datasets"], responses=errors(404, 409))

FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small fields beside the file


class SampleDocument(BaseModel):
    id: str
    split: str
    domain: str = Field(description="text, or chat for a conversation")
    text: str = Field(description="the document (a conversation in the plain User:/Assistant: format)")
    truncated: bool
    messages: list[dict[str, str]] | None = None


class DatasetOut(BaseModel):
    id: str
    name: str
    source: str = Field(description="world (the world's own), file (CLI) or upload")
    path: str
    format: str
    counts: dict[str, Any] = Field(
        description="documents, train, heldout, texts, conversations, chars, bytes, and harmful / harmless: the "
        "records labelled for refusal directions and steering sweeps"
    )
    sha256: str | None = Field(description="of the source file")
    created_at: datetime | None
    deletable: bool
    built: bool = Field(description="whether its documents exist (the world's dataset is written by the build)")


class DatasetDetail(DatasetOut):
    samples: list[SampleDocument] = Field(default_factory=list)


class DatasetList(BaseModel):
    datasets: list[DatasetOut]


@router.get("/datasets", response_model=DatasetList)
def list_datasets(datasets: DatasetsDep) -> Any:
    return {"datasets": datasets.list()}


@router.get("/datasets/{dataset_id}", response_model=DatasetDetail)
def get_dataset(dataset_id: str, datasets: DatasetsDep, samples: int = Query(5, ge=0, le=50)) -> Any:
    return datasets.describe(dataset_id, samples=samples)


UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "id"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": ".jsonl ({text} or {messages} per line), .txt or .parquet",
                        },
                        "id": {"type": "string", "description": "the dataset's id (letters, digits, _ . -)"},
                        "name": {"type": "string", "description": "a name to show; default: the id"},
                    },
                }
            }
        },
    }
}


@router.post(
    "/datasets", response_model=DatasetDetail, status_code=201, openapi_extra=UPLOAD_BODY, responses=errors(413)
)
async def upload_dataset(request: Request, datasets: DatasetsDep) -> Any:
    """Register a dataset from an uploaded file (multipart form: file, id, name?). Files over the
    server's limit (LOUPE_MAX_UPLOAD_BYTES) get 413; a malformed file gets 422 naming the line (or row
    and column) to fix. Nothing is written unless the whole file reads."""
    limit = datasets.upload_limit
    too_large = TooLarge(
        f"the file is larger than this server's upload limit of {limit:,} bytes (LOUPE_MAX_UPLOAD_BYTES)"
    )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
        raise too_large
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise Unprocessable('send a multipart/form-data body with the fields "file" and "id"')

    async def counted() -> AsyncGenerator[bytes, None]:
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit + FORM_OVERHEAD:  # a body without a (truthful) length: stop reading it
                raise too_large
            yield chunk

    try:
        form = await MultiPartParser(request.headers, counted(), max_files=1, max_fields=4).parse()
    except MultiPartException as exc:
        raise Unprocessable(f"malformed multipart body: {exc.message}") from exc
    try:
        upload, dataset_id, name = form.get("file"), form.get("id"), form.get("name")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise Unprocessable('give the dataset file in the form field "file"')
        if not isinstance(dataset_id, str) or not dataset_id:
            raise Unprocessable('give the dataset an id in the form field "id"')
        if upload.size is not None and upload.size > limit:
            raise too_large
        return await run_in_threadpool(_register, datasets, upload, dataset_id, name if isinstance(name, str) else None)
    finally:
        await form.close()


def _register(datasets: Any, upload: UploadFile, dataset_id: str, name: str | None) -> Any:
    fd, tmp = tempfile.mkstemp(suffix=Path(upload.filename or "").suffix)
    try:
        with os.fdopen(fd, "wb") as out:
            upload.file.seek(0)
            shutil.copyfileobj(upload.file, out)
        return datasets.add_file(Path(tmp), dataset_id, name or None, source="upload", filename=upload.filename)
    finally:
        os.unlink(tmp)


@router.delete("/datasets/{dataset_id}", status_code=204)
def delete_dataset(dataset_id: str, datasets: DatasetsDep) -> Response:
    """Delete a registered dataset with its tokens and activation caches (409 for the world's own, or
    while a job reads it)."""
    datasets.delete(dataset_id)
    return Response(status_code=204)
