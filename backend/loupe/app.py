"""create_app(settings): the service container, routers, error handlers, the security middleware and
body limits, the world's background build jobs, the built frontend."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from loupe import __version__
from loupe.api import datasets, evals, finetune, generate, health, jobs, models, saes, steering
from loupe.api import influence as influence_api
from loupe.api import jacobian as jacobian_api
from loupe.api import model_diff as model_diff_api
from loupe.api.errors import errors as error_responses
from loupe.errors import LoupeError
from loupe.security import SecurityMiddleware, default_allowed_hosts, resolve_auth
from loupe.services.container import Container
from loupe.settings import Settings, quiet_libraries
from loupe.worlds import Build, open_world, register_external_model

log = logging.getLogger("loupe")


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        if err.get("type") == "json_invalid":
            parts.append("the request body is not valid JSON")
        else:
            parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return "; ".join(parts) or "invalid request"


def create_app(
    settings: Settings | None = None, *, container: Container | None = None, background: bool = True
) -> FastAPI:
    """The app over `container` (default: the world of `settings` and a container made for it). With
    `background`, the world's pending analyses are queued as jobs when the app starts."""
    settings = settings or (container.settings if container else Settings())
    auth = resolve_auth(settings)  # before any work: a server that must not start says so at once
    quiet_libraries()
    world = None
    if container is None:
        world, container = open_world(settings)
        register_external_model(container)
    c = container

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # an outside model (LOUPE_MODEL): the world's analyses are of its own model, not this one
        if background and world is not None and not settings.model:
            Build(world, c).submit_background()
        yield
        if world is not None:
            c.jobs.shutdown()

    app = FastAPI(
        title="Loupe",
        version=__version__,
        lifespan=lifespan,
        description="Interpretability workbench API: models, jobs, generation, SAEs, steering, influence, Jacobians.",
    )
    app.state.container = c
    app.state.auth = auth
    app.add_middleware(
        SecurityMiddleware,
        router=app.router,
        token=auth.token,
        allowed_hosts=default_allowed_hosts(settings),
        read_only=settings.read_only,
        max_body_bytes=settings.max_body_bytes,
        # dataset uploads have their own, larger limit (the route checks it too, with its own message)
        body_limits={("POST", "/api/datasets"): settings.max_upload_bytes + 2 * datasets.FORM_OVERHEAD},
        body_types={
            ("POST", "/api/datasets"): "multipart/form-data",
            ("POST", "/api/vectors/import"): "application/octet-stream",
        },
    )

    @app.exception_handler(LoupeError)
    async def _loupe_error(_: Request, exc: LoupeError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": _validation_message(exc), "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    for r in (
        health.router,
        models.router,
        jobs.router,
        generate.router,
        evals.router,
        saes.router,
        datasets.router,
        influence_api.router,
        steering.router,
        jacobian_api.router,
        finetune.router,
        model_diff_api.router,
    ):
        # the app's error body for 422 (FastAPI would declare its own, whose `detail` is a list) and for
        # what loupe.security answers on any route: 400 (Host or a body that is not text), 401 (token),
        # 403 (cross-site or read-only), 413 (body size), 415 (content type)
        app.include_router(r, prefix="/api", responses=error_responses(400, 401, 403, 413, 415, 422))

    dist = settings.resolved_frontend_dist()
    _mount_frontend(app, dist)
    return app


def _mount_frontend(app: FastAPI, dist: Path) -> None:
    index = dist / "index.html"
    if (dist / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=dist / "assets"), name="assets")

    @app.get("/{path:path}", include_in_schema=False)
    async def spa(path: str):
        if path.startswith("api/") or path == "api":
            return JSONResponse({"detail": f"no API endpoint /{path}; see /docs"}, status_code=404)
        f = (dist / path).resolve()
        if path and f.is_file() and dist.resolve() in f.parents:
            return FileResponse(f)
        if index.is_file():
            return FileResponse(index)
        return JSONResponse(
            {"detail": "the web UI is not built: run `make run` (or `cd frontend && npm ci && npm run build`)"},
            status_code=404,
        )
