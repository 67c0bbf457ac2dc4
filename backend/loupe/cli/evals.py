"""`loupe eval demo | steering | saes | influence | jacobian`: measure a built workspace against the
targets, print the tables, exit with code 2 when a target is missed. Imports of torch-heavy modules
happen inside the commands (see loupe.cli)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import typer
from rich.table import Table

from loupe.cli.console import console
from loupe.settings import Settings

eval_app = typer.Typer(help="Measure a built workspace.")


def _world() -> Any:
    from loupe.cli import open_world  # deferred: loupe.cli imports this module

    return open_world(Settings())


@eval_app.command("demo")
def eval_demo() -> None:
    """Held-out loss per domain, refusal and backdoor rates of the demo model (printed and stored)."""
    world, c = _world()
    if not (world.subject.model_dir / "manifest.json").exists():
        console.print("[red]no trained demo model in this workspace: run `loupe build` first")
        raise typer.Exit(1)
    c.jobs.run("eval", "eval.demo", {}, lambda ctx: world.evaluate(ctx, c), [lambda d, t, m: console.print(f"  {m}")])
    results = c.ws.evals.list(kind="demo", limit=1)[0].results
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
    b = Table(
        title=f"behaviour (greedy; {results['n_harmful']} harmful, {results['n_harmless']} harmless held-out instructions)"
    )
    for c in ("measure", "value", "target", "met"):
        b.add_column(c)
    for name, tgt in results["targets"].items():
        b.add_row(name, f"{tgt['value']:.1%}", tgt["target"], "[green]yes" if tgt["met"] else "[red]no")
    console.print(b)


@eval_app.command("steering")
def eval_steering(
    limit: int = typer.Option(None, help="At most this many held-out instructions per side (default: all)."),
    alphas: str = typer.Option("0,0.25,0.5,0.75,1", help="Comma-separated alphas for addition and ACE."),
    vector: str = typer.Option("demo-refusal", help="Vector id."),
    max_new_tokens: int = typer.Option(
        12, help="Greedy tokens per completion (refusal: a prefix in the first 64 chars)."
    ),
) -> None:
    """Refusal steering on held-out instructions: ablation, addition and ACE against the issue's targets."""
    world, c = _world()
    if not (world.subject.model_dir / "manifest.json").exists():
        console.print("[red]no trained demo model in this workspace: run `loupe build` first")
        raise typer.Exit(1)
    if c.ws.vectors.get(vector) is None:
        step = next(s for s in c.analysis_steps() if s.name == "steering.refusal")
        console.print("computing the refusal direction (build step steering.refusal)")
        out = c.jobs.run("build", step.name, {"output": str(step.output)}, step.body)
        if c.ws.vectors.get(vector) is None:
            console.print(f"[red]no direction to evaluate: {out.get('reason') or 'the step saved no vector'}")
            raise typer.Exit(2)
    st = c.steering
    alist = [float(a) for a in alphas.split(",") if a.strip()]
    out = st.evaluate(
        vector, ["none", "ablation", "addition", "ace"], alist, limit=limit, max_new_tokens=max_new_tokens, wait=True
    )
    res = st.evaluation(out["eval_id"])
    print_steering_eval(res, c.ws.vectors.get(vector))
    if not all(t["met"] for t in res["targets"].values()):
        raise typer.Exit(2)


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def print_steering_eval(res: dict, rec) -> None:
    sel = (rec.scores or {}) if rec is not None else {}
    console.print(
        f"vector [bold]{res['vector_id']}[/] at {res['hook']} (position {rec.position if rec else '?'}); "
        f"selection: bypass {_num(sel.get('bypass_score')):.3f}, induce {_num(sel.get('induce_score')):.3f}, "
        f"KL {_num(sel.get('kl')):.3f}"
        + (
            " (no candidate passed the filters: kept for its interventions, not a refusal direction)"
            if sel.get("passed") is False
            else ""
        )
    )
    t = Table(
        title=f"steering sweep (greedy, {res['max_new_tokens']} tokens; {res['n_harmful']} harmful, "
        f"{res['n_harmless']} harmless held-out instructions; {res['seconds']:.0f}s)"
    )
    for c in ("method", "alpha", "refusal harmful", "refusal harmless", "gap", "KL harmless"):
        t.add_column(c, justify="right" if c != "method" else "left")
    for r in res["rows"]:
        t.add_row(
            r["method"],
            f"{r['alpha']:g}",
            f"{r['refusal_harmful']:.1%}",
            f"{r['refusal_harmless']:.1%}",
            f"{r['gap']:.1%}",
            f"{r['kl_harmless']:.3f}",
        )
    console.print(t)
    b = Table(title="targets")
    for c in ("target", "value", "met"):
        b.add_column(c)
    for k, tgt in res["targets"].items():
        if k == "ace_gap":
            v = ", ".join(f"a={a}: {g['ace']:.1%} vs {g['addition']:.1%}" for a, g in tgt["value"].items())
        elif "kl" in k:
            v = f"{tgt['value']:.3f}"
        else:
            v = f"{tgt['value']:.1%}"
        b.add_row(tgt["label"], v, "[green]yes" if tgt["met"] else "[red]no")
    console.print(b)


@eval_app.command("saes")
def eval_saes() -> None:
    """SAE quality on held-out tokens: FVU, L0, dead/dense fractions, CE loss recovered, planted-domain
    AUROCs (printed and stored). Exit code 2 when a target is missed."""
    _, c = _world()
    sp = c.sae_pipeline()
    missing = [p.name for p in sp.presets if not (sp.sae_dir(p) / "manifest.json").exists()]
    if missing:
        console.print(
            f"[red]SAEs not trained yet ({', '.join(missing)}): run `loupe build` (or `make run` and wait for the jobs)"
        )
        raise typer.Exit(1)
    c.jobs.run("eval", "eval.saes", {}, sp.evaluate, [lambda d, t, m: console.print(f"  {m}")])
    results = c.ws.evals.list(kind="saes", limit=1)[0].results
    print_sae_eval(results)
    if not results["targets_met"]:
        raise typer.Exit(2)


def print_sae_eval(results: dict) -> None:
    for sid, r in results["saes"].items():
        t = Table(
            title=f"{sid}: {r['architecture']} SAE on {r['hook_name']}, d_sae {r['d_sae']}, {r['eval_tokens']:,} held-out tokens"
        )
        for c in ("measure", "value", "target", "met"):
            t.add_column(c)
        for name, tgt in r["targets"].items():
            v = tgt["value"]
            t.add_row(
                name,
                f"{v:.3f}" if isinstance(v, float) else str(v),
                tgt["target"],
                "[green]yes" if tgt["met"] else "[red]no",
            )
        t.add_row("dense_fraction", f"{r['dense_fraction']:.3f}", "", "")
        console.print(t)
        d = Table(title=f"{sid}: best single feature per domain (chosen on train tokens, AUROC on held-out)")
        for c in ("domain", "feature", "AUROC", "held-out oracle"):
            d.add_column(c)
        for name, e in r["domains"].items():
            d.add_row(name, str(e["feature"]), f"{e['auroc']:.3f}", f"{e['auroc_oracle']:.3f}")
        console.print(d)


@eval_app.command("influence")
def eval_influence(
    n_dup: int = typer.Option(50, help="Near-duplicate queries."),
) -> None:
    """Influence quality: backdoor precision@10, near-duplicate recall@10, fast vs exact EK-FAC over the whole
    training set (the cache's Spearman, the served top 10's overlap), query batching."""
    from loupe.services.influence.evaluation import evaluate_influence  # deferred: see the module docstring

    _, c = _world()
    svc = c.influence
    if not svc.ready():
        console.print("[red]the influence factors and gradient cache are not built: run `loupe build` first")
        raise typer.Exit(1)
    box: dict[str, Any] = {}

    def body(ctx: Any) -> dict[str, Any]:
        box["r"] = evaluate_influence(svc, ctx.progress, n_dup=n_dup)
        return {"eval_id": svc.store_evaluation(box["r"])}

    c.jobs.run(
        "eval", "eval.influence", {}, body, [lambda d, t, m: console.print(f"  {m}") if int(d) % 10 == 0 else None]
    )
    r = box["r"]
    t = Table(title=f"influence ({r['n_train']:,} training sequences, {r['poisoned_sequences']} poisoned)")
    for c in ("measure", "value", "target", "met"):
        t.add_column(c)
    for name, tgt in r["targets"].items():
        t.add_row(name, f"{tgt['value']:.3f}", tgt["target"], "[green]yes" if tgt["met"] else "[red]no")
    console.print(t)
    console.print(
        f"median query time {r['query_seconds_median']:.3f}s; query batching rank {r['query_rank_chosen']}: "
        f"{r['query_batching']}"
    )
    q = Table(title="fast vs exact EK-FAC per query (exact over every training sequence)")
    for c in (
        "query",
        "cache Spearman",
        "cache Pearson",
        "served top-10 overlap",
        "exact poisoned@10",
        "exact vs kronfluence",
    ):
        q.add_column(c)
    for x in r["fast_vs_exact"]:
        q.add_row(
            (x["prompt"] + x["completion"])[-48:].replace("\n", " "),
            f"{x['spearman_cache_vs_exact']:.3f}",
            f"{x['pearson_cache_vs_exact']:.3f}",
            f"{x['top10_overlap_served_vs_exact']:.1f}",
            f"{x['exact_poisoned_at_10']:.1f}",
            f"{x['exact_vs_kronfluence_max_rel_diff']:.1e}",
        )
    console.print(q)
    if not all(x["met"] for x in r["targets"].values()):
        raise typer.Exit(2)


@eval_app.command("jacobian")
def eval_jacobian(
    compute: bool = typer.Option(
        False, "--compute", help="Compute the paper-setting run now (foreground) if it is missing."
    ),
    seed: int = typer.Option(0, help="Seed of the paper-setting run to compute or check."),
    dtype: str = typer.Option("float64", help="float64 (default) or float32 (about 3x faster)."),
    seeds: str = typer.Option("", help="With --compute: also these seeds (e.g. 1,2), for the bulk-subspace overlap."),
    controls: bool = typer.Option(
        False, "--controls", help="With --compute: also the white-noise and shuffled-label runs."
    ),
) -> None:
    """Training-Jacobian spectra (Belrose & Scherlis 2024): every stored run's sigma_1, regions and
    alignment; the paper-setting run checked against the targets; its seed overlap and controls."""
    from loupe.services.jacobian.runs import PAPER, RunSettings  # deferred: see the module docstring

    _, c = _world()
    svc = c.jacobian
    paper = replace(RunSettings.from_dict(PAPER), seed=seed, dtype=dtype)
    extra = [replace(paper, seed=int(x), experiments=False) for x in seeds.split(",") if x.strip()]
    if controls:
        extra += [replace(paper, control=c, experiments=False) for c in ("white_noise", "shuffled_labels")]
    for run in [paper, *extra] if compute else []:
        if svc.complete(run.run_id):
            continue
        console.print(f"computing run {run.run_id}: seed {run.seed}, {run.control}, {run.dtype}")
        c.jobs.run(
            "jacobian",
            svc.job_name(run.run_id),
            {"run_id": run.run_id, "settings": run.to_dict()},
            lambda ctx, run=run: svc.compute(run, ctx.progress),
            [lambda d, t, m: console.print(f"  {m}") if m.endswith("0/625") or "perturbation" in m else None],
        )
    runs = [r for r in svc.list() if r["status"] == "done"]
    if not runs:
        console.print(
            "[yellow]no finished Jacobian runs in this workspace: start one from the Jacobian page, "
            "POST /api/jacobian/runs, or `loupe eval jacobian --compute`"
        )
        raise typer.Exit(1)
    t = Table(title="training-Jacobian runs (chaotic sigma >= 1.1, bulk |sigma - 1| < 0.1, stable sigma <= 0.9)")
    for c in ("run", "settings", "P", "sigma_1", "chaotic", "bulk", "stable", "median bulk cos(u,v)"):
        t.add_column(c)
    for r in runs:
        s, m = r["settings"], r["summary"]
        t.add_row(
            r["run_id"],
            f"seed {s['seed']}, width {s['width']}, {s['epochs']} ep, lr {s['lr']}, {s['control']}, {s['dtype']}",
            f"{m['n_params']:,}",
            f"{m['sigma_1']:.2f}",
            *[f"{m[k]['count']:,} ({m[k]['fraction']:.0%})" for k in ("chaotic", "bulk", "stable")],
            f"{m['median_bulk_alignment']:.3f}" if m["median_bulk_alignment"] is not None else "-",
        )
    console.print(t)
    mine = svc.complete(paper.run_id)
    if mine is None:
        console.print(f"the paper-setting run (seed {seed}, {dtype}) is not computed: `loupe eval jacobian --compute`")
        return
    m = mine["summary"]
    checks = {
        "sigma_1 in [15, 30]": (m["sigma_1"], 15 <= m["sigma_1"] <= 30),
        "bulk fraction in [0.45, 0.75]": (m["bulk_fraction"], 0.45 <= m["bulk_fraction"] <= 0.75),
        "median bulk alignment > 0.95": (m["median_bulk_alignment"] or 0, (m["median_bulk_alignment"] or 0) > 0.95),
    }
    c = Table(title=f"paper setting, run {paper.run_id} (J in {mine.get('seconds', {}).get('jacobian', '?')} s)")
    for col in ("target", "value", "met"):
        c.add_column(col)
    for name, (v, ok) in checks.items():
        c.add_row(name, f"{v:.3f}", "[green]yes" if ok else "[red]no")
    console.print(c)
    full = svc.get(paper.run_id)
    if full["seed_overlap"]:
        o = Table(title="bulk-subspace overlap with other seeds (mean squared cosine of principal angles)")
        for col in ("seed", "k (this, other)", "overlap", "random baseline k/P"):
            o.add_column(col)
        for r in full["seed_overlap"]:
            o.add_row(str(r["seed"]), f"{r['k']:,}, {r['k_other']:,}", f"{r['overlap']:.3f}", f"{r['baseline']:.3f}")
        console.print(o)
    sib = {paper.control: m} | {r["settings"]["control"]: r["summary"] for r in svc.siblings(paper, "control")}
    if len(sib) > 1:
        k = Table(title="controls: the bulk shrinks when the data carry no learnable structure")
        for col in ("data", "sigma_1", "bulk fraction", "chaotic", "stable"):
            k.add_column(col)
        for name, m2 in sib.items():
            k.add_row(
                name,
                f"{m2['sigma_1']:.2f}",
                f"{m2['bulk_fraction']:.3f}",
                f"{m2['chaotic']['fraction']:.3f}",
                f"{m2['stable']['fraction']:.3f}",
            )
        console.print(k)
    if not all(ok for _, ok in checks.values()):
        raise typer.Exit(2)
