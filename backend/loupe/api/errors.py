"""The one error body of every 4xx (`{"detail": ..., "errors"?: [...]}`), and the OpenAPI `responses`
that declare it: routers take `errors(404, 409)` for the statuses their services raise; the app adds
422 to every route (request validation, and `Unprocessable` from the services)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where in the request: body, query, path, then field names")
    msg: str
    type: str


class ErrorOut(BaseModel):
    """An error a person can act on."""

    detail: str = Field(description="what went wrong and what to do about it")
    errors: list[FieldError] | None = Field(None, description="request validation (422): one entry per invalid field")


MEANING: dict[int, str] = {
    400: "Bad request",
    401: "Missing or wrong credentials",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict with the current state (not built yet, in use, or already there)",
    413: "Request body too large",
    415: "Unsupported content type",
    422: "Invalid request",
    429: "Too many queued jobs; retry later",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` declaring the shared error body for each status in `codes`."""
    return {code: {"model": ErrorOut, "description": MEANING[code]} for code in codes}
