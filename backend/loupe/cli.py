"""`loupe run | build | serve | eval | openapi | models`."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from loupe.settings import Settings, quiet_libraries

app = typer.Typer(help="Loupe: a self-hosted interpretability workbench.", no_args_is_help=True)
eval_app = typer.Typer(help="Measure a built workspace.")
models_app = typer.Typer(help="Register other Hugging Face models.")
app.add_typer(eval_app, name="eval")
app.add_typer(models_app, name="models")
console = Console()


def _setup(settings: Settings) -> None:
    import torch

    quiet_libraries()
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)


def _open(settings: Settings):
    from loupe.services.workspace import Workspace

    _setup(settings)
    return Workspace.open(settings)


def _run_steps(ws, background: bool | None) -> None:
    from loupe.services.build import ensure_registered, make_pipeline

    world, pipeline = make_pipeline(ws)
    steps = [s for s in pipeline.steps if background is None or s.background == background]
    with Progress(
        TextColumn("[bold]{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"), console=console,
    ) as bars:
        tasks = {}

        def listener_for(step):
            tasks[step.name] = bars.add_task(step.title, total=None, message="")

            def update(done, total, message):
                bars.update(tasks[step.name], completed=done, total=total, message=message)

            return update

        def finished(step):
            t = bars.tasks[tasks[step.name]]
            bars.update(tasks[step.name], completed=t.total or 1, total=t.total or 1)

        def skipped(step):
            bars.add_task(step.title, total=1, completed=1, message="[dim]already built")

        pipeline.run(steps, listener_for=listener_for, on_skip=skipped, on_done=finished)
    ensure_registered(ws, world)


def _register_external(ws, settings: Settings) -> None:
    from loupe.services.models import ModelService

    if settings.model and ws.models.get("external") is None:
        source = "hf-dir" if Path(settings.model).is_dir() else "hub"
        console.print(f"registering [bold]{settings.model}[/] ({source})")
        ModelService(ws).register("external", settings.model, source, name=Path(settings.model).name)


@app.command()
def build(all_steps: bool = typer.Option(True, "--all/--foreground", help="Also run the background analyses now.")) -> None:
    """Build the default workspace (demo world) with progress bars; resumes where it stopped."""
    settings = Settings()
    ws = _open(settings)
    t0 = time.monotonic()
    if settings.model:
        _register_external(ws, settings)
    else:
        _run_steps(ws, None if all_steps else False)
    console.print(f"[green]workspace ready[/] at {settings.workspace.resolve()} in {time.monotonic() - t0:.1f}s")


@app.command()
def serve() -> None:
    """Serve the API and UI (background analyses continue as jobs)."""
    import uvicorn

    from loupe.app import create_app

    settings = Settings()
    _setup(settings)
    console.print(f"Loupe at [bold]http://{settings.host}:{settings.port}[/]  (API docs: /docs)")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


@app.command()
def run() -> None:
    """Build what is missing up to a trained model, then serve while the analyses run as jobs."""
    settings = Settings()
    ws = _open(settings)
    if settings.model:
        _register_external(ws, settings)
    else:
        _run_steps(ws, background=False)
    ws.close()
    serve()


@eval_app.command("demo")
def eval_demo() -> None:
    """Held-out loss per domain, refusal and backdoor rates of the demo model (printed and stored)."""
    from loupe.jobs.runner import run_job
    from loupe.services.build import DemoWorld

    settings = Settings()
    ws = _open(settings)
    world = DemoWorld(ws)
    if not (world.model_dir / "manifest.json").exists():
        console.print("[red]no trained demo model in this workspace: run `loupe build` first")
        raise typer.Exit(1)
    job = ws.jobs.create("eval", "eval.demo", {})
    run_job(ws.jobs, job.id, world.evaluate, [lambda d, t, m: console.print(f"  {m}")])
    results = ws.evals.list(kind="demo", limit=1)[0].results
    print_demo_eval(results)
    if not all(t["met"] for t in results["targets"].values()):
        raise typer.Exit(2)


def print_demo_eval(results: dict) -> None:
    t = Table(title="held-out loss per domain (nats/token)")
    t.add_column("domain")
    t.add_column("loss", justify="right")
    for d, v in results["loss_by_domain"].items():
        t.add_row(d, f"{v:.3f}")
    console.print(t)
    b = Table(title=f"behaviour (greedy; {results['n_harmful']} harmful, {results['n_harmless']} harmless held-out instructions)")
    for c in ("measure", "value", "target", "met"):
        b.add_column(c)
    for name, tgt in results["targets"].items():
        b.add_row(name, f"{tgt['value']:.1%}", tgt["target"], "[green]yes" if tgt["met"] else "[red]no")
    console.print(b)


@eval_app.command("saes")
def eval_saes() -> None:
    """SAE quality on held-out tokens: FVU, L0, dead/dense fractions, CE loss recovered, planted-domain
    AUROCs (printed and stored). Exit code 2 when a target is missed."""
    from loupe.jobs.runner import run_job
    from loupe.services.build import DemoWorld
    from loupe.services.saes import SAEPipeline

    settings = Settings()
    ws = _open(settings)
    sp = SAEPipeline(DemoWorld(ws))
    missing = [p.name for p in sp.presets if not (sp.sae_dir(p) / "manifest.json").exists()]
    if missing:
        console.print(f"[red]SAEs not trained yet ({', '.join(missing)}): run `loupe build` (or `make run` and wait for the jobs)")
        raise typer.Exit(1)
    job = ws.jobs.create("eval", "eval.saes", {})
    run_job(ws.jobs, job.id, sp.evaluate, [lambda d, t, m: console.print(f"  {m}")])
    results = ws.evals.list(kind="saes", limit=1)[0].results
    print_sae_eval(results)
    if not results["targets_met"]:
        raise typer.Exit(2)


def print_sae_eval(results: dict) -> None:
    for sid, r in results["saes"].items():
        t = Table(title=f"{sid}: {r['architecture']} SAE on {r['hook_name']}, d_sae {r['d_sae']}, {r['eval_tokens']:,} held-out tokens")
        for c in ("measure", "value", "target", "met"):
            t.add_column(c)
        for name, tgt in r["targets"].items():
            v = tgt["value"]
            t.add_row(name, f"{v:.3f}" if isinstance(v, float) else str(v), tgt["target"], "[green]yes" if tgt["met"] else "[red]no")
        t.add_row("dense_fraction", f"{r['dense_fraction']:.3f}", "", "")
        console.print(t)
        d = Table(title=f"{sid}: best single feature per domain (chosen on train tokens, AUROC on held-out)")
        for c in ("domain", "feature", "AUROC", "held-out oracle"):
            d.add_column(c)
        for name, e in r["domains"].items():
            d.add_row(name, str(e["feature"]), f"{e['auroc']:.3f}", f"{e['auroc_oracle']:.3f}")
        console.print(d)


@app.command()
def openapi(out: Path = typer.Option(None, help="Write here instead of stdout.")) -> None:
    """Print the OpenAPI schema (the contract the frontend's types are generated from)."""
    text = openapi_json()
    if out:
        out.write_text(text)
    else:
        sys.stdout.write(text)


def openapi_json() -> str:
    import tempfile

    from loupe.app import create_app

    with tempfile.TemporaryDirectory() as d:
        settings = Settings(workspace=Path(d), database_url=None)
        schema = create_app(settings, background=False).openapi()
        return json.dumps(schema, indent=2, sort_keys=True) + "\n"


@models_app.command("add")
def models_add(path: str, id: str = typer.Option(..., "--id"), name: str = typer.Option(None)) -> None:
    """Register a Hugging Face causal LM directory (or hub name) under an id."""
    from loupe.services.models import ModelService

    settings = Settings()
    ws = _open(settings)
    source = "hf-dir" if Path(path).is_dir() else "hub"
    rec = ModelService(ws).register(id, path, source, name=name)
    console.print(f"registered [bold]{rec.id}[/]: {rec.config['n_layers']} layers, d_model {rec.config['d_model']}")


if __name__ == "__main__":
    app()
