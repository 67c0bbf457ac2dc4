"""create_app(settings): routers, error handlers, background build jobs, the built frontend."""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from loupe import __version__
from loupe.api import evals, generate, health, jobs, models, saes, steering
from loupe.api import influence as influence_api
from loupe.api import jacobian as jacobian_api
from loupe.errors import LoupeError
from loupe.services.generation import GenerationService
from loupe.services.jacobian import JacobianService
from loupe.services.models import ModelService
from loupe.services.sae_service import SAEService
from loupe.services.workspace import Workspace
from loupe.settings import Settings, quiet_libraries

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


def run_background_steps(app: FastAPI) -> threading.Thread | None:
    """Start the build's background steps (analyses) in a worker thread of this process."""
    from loupe.services.build import make_pipeline

    ws: Workspace = app.state.workspace
    if ws.settings.model:
        return None  # an outside model: the demo world's analyses do not apply
    _, pipeline = make_pipeline(ws)
    pending = pipeline.pending(background=True)
    if not pending or pipeline.pending(background=False):
        return None

    def work() -> None:
        try:
            pipeline.run(pending)
        except Exception:  # recorded on the job row; the server keeps serving
            log.exception("background build step failed")

    t = threading.Thread(target=work, name="loupe-background-build", daemon=True)
    t.start()
    return t


def create_app(
    settings: Settings | None = None, *, workspace: Workspace | None = None, background: bool = True
) -> FastAPI:
    settings = settings or Settings()
    quiet_libraries()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if background:
            app.state.background = run_background_steps(app)
        yield

    app = FastAPI(
        title="Loupe",
        version=__version__,
        lifespan=lifespan,
        description="Interpretability workbench API: models, jobs, generation (and later SAEs, steering, influence, Jacobians).",
    )
    ws = workspace or Workspace.open(settings)
    app.state.workspace = ws
    app.state.models = ModelService(ws)
    app.state.generation = GenerationService(app.state.models, settings.max_new_tokens)
    app.state.saes = SAEService(ws, app.state.models)
    app.state.jacobian = JacobianService(ws, app.state.models)

    @app.exception_handler(LoupeError)
    async def _loupe_error(_: Request, exc: LoupeError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse({"detail": _validation_message(exc), "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    for r in (
        health.router,
        models.router,
        jobs.router,
        generate.router,
        evals.router,
        saes.router,
        influence_api.router,
        steering.router,
        jacobian_api.router,
    ):
        app.include_router(r, prefix="/api")

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
