"""`loupe run | build | serve | eval | openapi | models | datasets`.

Imports of torch-heavy modules (loupe.worlds, loupe.app, services) happen inside the commands, so
`loupe --help` and typos answer at once instead of after seconds of loading torch and transformers."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from loupe.cli.console import console, progress_bars
from loupe.cli.evals import eval_app
from loupe.errors import LoupeError
from loupe.jobs.memory import peak_mb, reset_peak
from loupe.settings import Settings, quiet_libraries

if TYPE_CHECKING:
    from loupe.security import Auth
    from loupe.services.container import Container
    from loupe.worlds import World

app = typer.Typer(help="Loupe: a self-hosted interpretability workbench.", no_args_is_help=True)
models_app = typer.Typer(help="Register other Hugging Face models.")
datasets_app = typer.Typer(help="Register datasets (JSONL, text or parquet files) and list them.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
app.add_typer(models_app, name="models")
app.add_typer(datasets_app, name="datasets")


def setup(settings: Settings) -> None:
    import torch  # deferred: see the module docstring

    quiet_libraries()
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)


def open_world(settings: Settings) -> tuple[World, Container]:
    """The world of `settings` and this process's service container (jobs run in this thread)."""
    from loupe.jobs.executors import InlineExecutor  # deferred: see the module docstring
    from loupe.worlds import open_world as open_world_

    setup(settings)
    return open_world_(settings, executor=InlineExecutor())


def run_steps(world: World, c: Container, background: bool | None) -> None:
    """The world's steps in this thread with a progress bar each; finished ones are skipped."""
    from loupe.worlds import Build  # deferred: see the module docstring

    with progress_bars() as bars:
        tasks: dict[str, Any] = {}
        started: dict[str, float] = {}

        def listener_for(step: Any) -> Any:
            tasks[step.name] = bars.add_task(step.title, total=None, message="")
            started[step.name] = time.monotonic()
            reset_peak()  # steps run one at a time here, so the peak after it is the step's own

            def update(done: float, total: float | None, message: str) -> None:
                bars.update(tasks[step.name], completed=done, total=total, message=message)

            return update

        def finished(step: Any) -> None:
            t = bars.tasks[tasks[step.name]]
            bars.update(tasks[step.name], completed=t.total or 1, total=t.total or 1)
            peak = peak_mb()
            bars.console.print(
                f"{step.name}: {time.monotonic() - started[step.name]:.1f}s"
                + (f", peak RSS {peak:,.0f} MB" if peak is not None else "")
            )

        def skipped(step: Any) -> None:
            bars.add_task(step.title, total=1, completed=1, message="[dim]already built")

        Build(world, c).run(background, listener_for=listener_for, on_skip=skipped, on_done=finished)


def register_external(c: Container, settings: Settings) -> None:
    from loupe.worlds import EXTERNAL_MODEL_ID, register_external_model  # deferred: see the module docstring

    if settings.model and c.models.record(EXTERNAL_MODEL_ID) is None:
        console.print(f"registering [bold]{settings.model}[/]")
    register_external_model(c)


@app.command()
def build(
    all_steps: bool = typer.Option(True, "--all/--foreground", help="Also run the background analyses now."),
) -> None:
    """Build the default workspace (demo world) with progress bars; resumes where it stopped."""
    settings = Settings()
    world, c = open_world(settings)
    t0 = time.monotonic()
    if settings.model:
        register_external(c, settings)
    else:
        run_steps(world, c, None if all_steps else False)
    console.print(f"[green]workspace ready[/] at {settings.workspace.resolve()} in {time.monotonic() - t0:.1f}s")


INSECURE_HELP = (
    "Serve a non-loopback host without a token (LOUPE_INSECURE_NO_AUTH): anyone who reaches the port may read "
    "and change this server."
)


def server_settings(insecure_no_auth: bool) -> tuple[Settings, Auth]:
    """The settings to serve with and their token, or exit with the reason the server must not start."""
    from loupe.security import RefuseToStart, resolve_auth  # deferred: it imports FastAPI; see the module docstring

    settings = Settings()
    if insecure_no_auth:
        settings = settings.model_copy(update={"insecure_no_auth": True})
    try:
        return settings, resolve_auth(settings)
    except RefuseToStart as exc:
        console.print(f"[red]Loupe will not start:[/] {exc}")
        raise typer.Exit(2) from exc


def announce(settings: Settings, auth: Auth) -> None:
    console.print(f"Loupe at [bold]http://{settings.host}:{settings.port}[/]  (API docs: /docs)")
    if auth.source == "generated":
        console.print(
            f"API token (printed this once; kept in {auth.path}, mode 0600): [bold]{auth.token}[/]\n"
            "the web page asks for it; scripts send `Authorization: Bearer <token>`"
        )
    elif auth.source == "file":
        console.print(f"API token: the one in {auth.path}")
    elif auth.source == "setting":
        console.print("API token: LOUPE_TOKEN")
    elif auth.source == "insecure":
        console.print("[yellow]no API token (--insecure-no-auth): anyone who reaches this port may change this server")
    if settings.read_only:
        console.print("read-only (LOUPE_READ_ONLY): writes and jobs get 403")


@app.command()
def serve(insecure_no_auth: bool = typer.Option(False, "--insecure-no-auth", help=INSECURE_HELP)) -> None:
    """Serve the API and UI (background analyses continue as jobs)."""
    settings, auth = server_settings(insecure_no_auth)
    _serve(settings, auth)


def _serve(settings: Settings, auth: Auth) -> None:
    import uvicorn  # deferred: see the module docstring

    from loupe.app import create_app

    setup(settings)
    app_ = create_app(settings)
    announce(settings, auth)
    uvicorn.run(app_, host=settings.host, port=settings.port, log_level="warning")


@app.command()
def run(insecure_no_auth: bool = typer.Option(False, "--insecure-no-auth", help=INSECURE_HELP)) -> None:
    """Build what is missing up to a trained model, then serve while the analyses run as jobs."""
    settings, auth = server_settings(insecure_no_auth)  # refuse before minutes of building, not after
    world, c = open_world(settings)
    if settings.model:
        register_external(c, settings)
    else:
        run_steps(world, c, background=False)
    c.close()
    _serve(settings, auth)


@app.command()
def openapi(out: Path = typer.Option(None, help="Write here instead of stdout.")) -> None:
    """Print the OpenAPI schema (the contract the frontend's types are generated from)."""
    text = openapi_json()
    if out:
        out.write_text(text)
    else:
        sys.stdout.write(text)


def openapi_json() -> str:
    import tempfile  # noqa: I001

    from loupe.app import create_app  # deferred: see the module docstring

    with tempfile.TemporaryDirectory() as d:
        settings = Settings(workspace=Path(d), database_url=None)
        schema = create_app(settings, background=False).openapi()
        return json.dumps(schema, indent=2, sort_keys=True) + "\n"


@app.command()
def finetune(
    parent: str = typer.Option(..., help="The registered model to start from."),
    dataset: str = typer.Option(..., help="A dataset id: conversations train the assistant's turns, texts all."),
    id: str = typer.Option(..., "--id", help="The new model's id."),
    method: str = typer.Option("lora", help="lora or full."),
    steps: int = typer.Option(200, min=1),
    lr: float = typer.Option(None, help="Default: 2e-4 for LoRA, 2e-5 for full."),
    batch_size: int = typer.Option(8, min=1),
    max_length: int = typer.Option(256, min=8),
    lora_r: int = typer.Option(8, min=1),
) -> None:
    """Fine-tune a model on a dataset into a new registered model, in this process with a progress bar
    (as POST /api/finetunes does in the server); a rerun after a kill resumes from its last checkpoint."""
    from loupe.services.finetune import FineTuneConfig  # deferred: see the module docstring

    settings = Settings()
    _, c = open_world(settings)
    cfg = FineTuneConfig(
        method=method,
        max_steps=steps,
        learning_rate=lr,
        batch_size=batch_size,
        max_length=max_length,
        lora_r=lora_r,
        lora_alpha=2 * lora_r,
    )
    t0 = time.monotonic()
    refused: str | None = None
    with progress_bars("fine-tune") as bars:
        task = bars.add_task("fine-tune", total=steps, message="")

        def update(done: float, total: float | None, message: str) -> None:
            bars.update(task, completed=done, total=total, message=message)

        try:
            job = c.finetunes.start(parent, dataset, id, cfg, listeners=[update])
        except LoupeError as exc:
            refused = exc.message
    if refused is not None:  # printed after the bar is gone
        console.print(f"[red]cannot fine-tune:[/] {refused}")
        raise typer.Exit(1)
    row = c.ws.jobs.get(job.id)
    if row is None or row.status != "done":
        console.print(f"[red]fine-tune failed[/]: {row.error if row else 'no job row'}")
        raise typer.Exit(1)
    run = c.finetunes.run(id)
    console.print(
        f"[green]registered {id}[/] ({method} of {parent} on {dataset}) in {time.monotonic() - t0:.0f}s: train loss "
        f"{run['loss'][0]['loss']:.3f} -> {run['loss'][-1]['loss']:.3f}, held-out {run['heldout_loss_before']} -> "
        f"{run['heldout_loss_after']}"
    )


@models_app.command("add")
def models_add(path: str, id: str = typer.Option(..., "--id"), name: str = typer.Option(None)) -> None:
    """Register a Hugging Face causal LM directory (or hub name) under an id."""
    settings = Settings()
    _, c = open_world(settings)
    source = "hf-dir" if Path(path).is_dir() else "hub"
    rec = c.models.register(id, path, source, name=name)
    console.print(f"registered [bold]{rec.id}[/]: {rec.config['n_layers']} layers, d_model {rec.config['d_model']}")


@models_app.command("import")
def models_import(file: str, id: str = typer.Option(..., "--id"), name: str = typer.Option(None)) -> None:
    """Import a GGUF file (any architecture transformers reads): dequantized to float32, saved as a
    Hugging Face directory in the workspace, and registered under an id."""
    from loupe.services.models.gguf import import_gguf  # deferred: see the module docstring

    settings = Settings()
    _, c = open_world(settings)
    try:
        rec = import_gguf(c.models, file, id, name=name)
    except LoupeError as exc:
        console.print(f"[red]cannot import {file}:[/] {exc.message}")
        raise typer.Exit(1) from exc
    console.print(
        f"imported [bold]{rec.id}[/] into {c.models.path(rec)}: {rec.config['n_layers']} layers, d_model {rec.config['d_model']}"
    )


@datasets_app.command("add")
def datasets_add(
    file: Path,
    id: str = typer.Option(..., "--id", help="The dataset's id (letters, digits, _ . -)."),
    name: str = typer.Option(None, help="A name to show; default: the id."),
) -> None:
    """Register a dataset file: JSONL ({"text"} or {"messages"} per line), .txt (documents separated by
    blank lines) or .parquet (a text or messages column). Its documents are stored in the workspace."""
    settings = Settings()
    _, c = open_world(settings)
    try:
        d = c.datasets.add_file(file, id, name)
    except LoupeError as exc:
        console.print(f"[red]cannot register {file}:[/] {exc.message}")
        raise typer.Exit(1) from exc
    n = d["counts"]
    console.print(
        f"registered [bold]{d['id']}[/]: {n['documents']:,} documents ({n['texts']:,} texts, "
        f"{n['conversations']:,} conversations), {n['train']:,} train / {n['heldout']:,} held out"
    )


@datasets_app.command("list")
def datasets_list() -> None:
    """The workspace's datasets: the world's own and the registered ones."""
    from rich.table import Table  # deferred: see the module docstring

    settings = Settings()
    _, c = open_world(settings)
    table = Table("id", "name", "source", "format", "documents", "conversations", "sha256")
    for d in c.datasets.list():
        n = d["counts"]
        table.add_row(
            d["id"],
            d["name"],
            d["source"],
            d["format"],
            f"{n.get('documents', 0):,}",
            f"{n.get('conversations', 0):,}",
            (d["sha256"] or "")[:12],
        )
    console.print(table)


if __name__ == "__main__":
    app()
