"""Jacobian spectra: training-Jacobian runs (jobs -> artifacts) and per-token layer Jacobians.

A training-Jacobian run is keyed by its settings: the same settings are the same run (never
recomputed). Its artifacts, in ``artifacts/jacobian/<run_id>/``:

    spectrum.safetensors  singular_values, alignment (float64), V (right singular vectors, float32,
                          columns), theta0, thetaT
    results.json          spectrum summary (regions, boundaries), train/test metrics, perturbation rows
    manifest.json         key (= run_id), settings, summary; written last (the run is complete iff present)

Runs that differ only in ``seed`` are the seed comparison (bulk-subspace overlap vs the random
baseline k/P); runs that differ only in ``control`` are the controls overlay. Both are computed when a
run is fetched, from whichever such runs are complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from loupe.core import jacobian as jac
from loupe.errors import Conflict, NotFound, Unprocessable
from loupe.storage.artifacts import atomic_dir, load_tensors, read_manifest, save_tensors, write_manifest

# A full P x P Jacobian in float64 is 8 P^2 bytes; with U, V and LAPACK's SVD workspace about 5 such
# matrices are alive at once. 10,000 parameters -> 0.8 GB per matrix, ~4 GB peak: the most this
# 2-core / 23 GB machine can hold beside the server and the other jobs. Time grows as P x steps.
MAX_PARAMS = 10_000
JOB_KIND = "jacobian"
PAPER = {
    "seed": 0,
    "width": 64,
    "depth": 1,
    "epochs": 25,
    "batch_size": 64,
    "lr": 0.1,
    "momentum": 0.9,
    "control": "none",
    "experiments": True,
    "dtype": "float64",
    "init": "lecun",
}


@dataclass(frozen=True)
class RunSettings:
    seed: int = 0
    width: int = 64
    depth: int = 1
    epochs: int = 25
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    control: str = "none"
    experiments: bool = True
    dtype: str = "float64"
    init: str = "lecun"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def train_config(self) -> jac.TrainConfig:
        return jac.TrainConfig(
            seed=self.seed,
            width=self.width,
            depth=self.depth,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            momentum=self.momentum,
            control=self.control,
            init=self.init,
        )  # type: ignore[arg-type]

    @property
    def n_params(self) -> int:
        return jac.n_params(self.width, self.depth)


# The run each world's build computes in the background: the paper's setting for the demo world (about
# 10 minutes on 2 cores in float64, bench/RESULTS.md), a few-second one for the test world.
BUILD_RUNS: dict[str, dict[str, Any]] = {
    "demo": PAPER,
    "micro": {**PAPER, "width": 4, "epochs": 1, "dtype": "float32"},
}


def _build_settings() -> dict[str, dict[str, Any]]:
    runs = [RunSettings.from_dict(d) for d in BUILD_RUNS.values()]
    return {r.run_id: r.to_dict() for r in runs}


def build_steps(world) -> list:
    """The world's background build step: one training-Jacobian run. Its job is named like the
    service's jobs (``jacobian.<run_id>``), so the Jacobian page shows it and never starts it twice."""
    from loupe.jobs.executors import InlineExecutor
    from loupe.jobs.pipeline import Step

    s = RunSettings.from_dict(BUILD_RUNS.get(world.cfg.name, PAPER))
    svc = JacobianService(world.ws, executor=InlineExecutor())
    return [
        Step(
            svc._job_name(s.run_id),
            "training Jacobian (paper settings)",
            svc.run_dir(s.run_id),
            lambda ctx: svc.compute(s, ctx.progress),
            background=True,
            key=s.run_id,
        )
    ]


def validate(s: RunSettings) -> None:
    """Bad settings -> Unprocessable with the reason."""
    if not s.lr > 0:
        raise Unprocessable(f"lr must be positive (got {s.lr}); the paper's setting is 0.1")
    if not 0 <= s.momentum < 1:
        raise Unprocessable(f"momentum must be in [0, 1) (got {s.momentum})")
    if s.width < 1 or s.depth < 1 or s.epochs < 1:
        raise Unprocessable("width, depth and epochs must be at least 1")
    if s.control not in jac.CONTROLS:
        raise Unprocessable(f"control must be one of {', '.join(jac.CONTROLS)} (got {s.control!r})")
    if s.init not in jac.INITS:
        raise Unprocessable(f"init must be one of {', '.join(jac.INITS)} (got {s.init!r})")
    if s.dtype not in ("float64", "float32"):
        raise Unprocessable(f"dtype must be float64 or float32 (got {s.dtype!r})")
    n_train = jac.TrainConfig().n_train
    if not 1 <= s.batch_size <= n_train:
        raise Unprocessable(f"batch_size must be between 1 and {n_train} (the training set)")
    p = s.n_params
    if p > MAX_PARAMS:
        gb = 8 * p * p / 1e9
        raise Unprocessable(
            f"a depth-{s.depth}, width-{s.width} MLP has {p:,} parameters: its full {p:,} x {p:,} training "
            f"Jacobian is {gb:.1f} GB in float64 (about 5x that with the SVD), over this server's limit of "
            f"{MAX_PARAMS:,} parameters (width <= {max_width(s.depth)} at depth {s.depth})"
        )


def max_width(depth: int) -> int:
    w = 1
    while jac.n_params(w + 1, depth) <= MAX_PARAMS:
        w += 1
    return w


# -- figures (plotly) --------------------------------------------------------------------------------

REGION_COLORS = {"chaotic": "rgba(214,39,40,0.12)", "bulk": "rgba(44,160,44,0.15)", "stable": "rgba(31,119,180,0.12)"}


def _fig(fig) -> dict[str, Any]:
    return json.loads(fig.to_json())


def spectrum_figure(
    s: list[float], summary: dict, overlays: dict[str, list[float]] | None = None, tol: float = 0.1
) -> dict[str, Any]:
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(go.Scatter(y=s, mode="lines", name="this run", line={"width": 2}))
    for name, vals in (overlays or {}).items():
        fig.add_trace(go.Scatter(y=vals, mode="lines", name=name, line={"width": 1, "dash": "dot"}))
    top = max([s[0]] + [v[0] for v in (overlays or {}).values() if v]) * 1.5
    bottom = max(min([s[-1]] + [v[-1] for v in (overlays or {}).values() if v]) / 1.5, 1e-12)
    bands = {"chaotic": (1 + tol, top), "bulk": (1 - tol, 1 + tol), "stable": (bottom, 1 - tol)}
    for name, (y0, y1) in bands.items():
        fig.add_hrect(y0=y0, y1=y1, fillcolor=REGION_COLORS[name], line_width=0)
    counts = " · ".join(
        f"{name} {summary.get(name, {}).get('count', 0):,} ({summary.get(name, {}).get('fraction', 0):.0%})"
        for name in bands
    )
    fig.update_layout(
        title=f"Training-Jacobian singular values: {counts}",
        xaxis_title="index i (descending)",
        yaxis_title="sigma_i",
        yaxis_type="log",
        yaxis_range=[_log10(bottom), _log10(top)],
        margin={"t": 40, "r": 10, "l": 60, "b": 40},
        height=380,
        legend={"orientation": "h"},
    )
    return _fig(fig)


def _log10(x: float) -> float:
    import math

    return math.log10(x)


def alignment_figure(s: list[float], align: list[float], tol: float = 0.1) -> dict[str, Any]:
    import plotly.graph_objects as go

    fig = go.Figure(go.Scattergl(x=s, y=align, mode="markers", marker={"size": 3}, name="cos(u_i, v_i)"))
    for x in (1 - tol, 1 + tol):
        fig.add_vline(x=x, line_dash="dot", line_color="gray")
    fig.update_layout(
        title="Alignment of left and right singular vectors",
        xaxis_title="sigma_i",
        yaxis_title="cos(u_i, v_i)",
        xaxis_type="log",
        yaxis_range=[-1.05, 1.05],
        margin={"t": 40, "r": 10, "l": 60, "b": 40},
        height=340,
    )
    return _fig(fig)


def perturbation_figure(by_region: dict[str, dict]) -> dict[str, Any]:
    import plotly.graph_objects as go

    regions = [r for r in ("chaotic", "bulk", "stable", "random") if r in by_region]
    fig = go.Figure(
        [
            go.Bar(name="KL on test set (in distribution)", x=regions, y=[by_region[r]["kl_test"] for r in regions]),
            go.Bar(
                name="KL on white noise (out of distribution)", x=regions, y=[by_region[r]["kl_noise"] for r in regions]
            ),
        ]
    )
    fig.update_layout(
        title="Retrained from theta_0 + eps v: change of the trained network",
        barmode="group",
        yaxis_type="log",
        yaxis_title="mean KL(original || perturbed)",
        margin={"t": 40, "r": 10, "l": 60, "b": 40},
        height=340,
        legend={"orientation": "h"},
    )
    return _fig(fig)


def overlap_figure(rows: list[dict]) -> dict[str, Any]:
    import plotly.graph_objects as go

    x = [f"seed {r['seed']}" for r in rows]
    fig = go.Figure(
        [
            go.Bar(name="bulk overlap", x=x, y=[r["overlap"] for r in rows]),
            go.Bar(name="random baseline k/P", x=x, y=[r["baseline"] for r in rows]),
        ]
    )
    fig.update_layout(
        title="Bulk-subspace overlap with other seeds",
        barmode="group",
        yaxis_range=[0, 1],
        margin={"t": 40, "r": 10, "l": 60, "b": 40},
        height=300,
        legend={"orientation": "h"},
    )
    return _fig(fig)


# -- the service ---------------------------------------------------------------------------------------


class JacobianService:
    def __init__(self, ws, models=None, executor=None):
        from loupe.jobs.executors import ThreadExecutor

        self.ws = ws
        self.models = models
        self.executor = executor or ThreadExecutor()
        self._lock = threading.Lock()
        self._overlaps: dict[tuple[str, str], float] = {}
        self._bulk: dict[str, torch.Tensor] = {}
        self._decoders: dict[str, tuple[str, torch.Tensor]] = {}

    # paths and state
    @property
    def root(self) -> Path:
        return self.ws.artifact("jacobian")

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def _job_name(self, run_id: str) -> str:
        return f"jacobian.{run_id}"

    def _complete(self, run_id: str) -> dict | None:
        m = read_manifest(self.run_dir(run_id))
        return m if m and m.get("key") == run_id else None

    def list(self) -> list[dict[str, Any]]:
        runs: dict[str, dict] = {}
        build_jobs = [j for j in self.ws.jobs.list(limit=500, kind="build") if j.name.startswith("jacobian.")]
        build_settings = _build_settings()
        for job in sorted(self.ws.jobs.list(limit=500, kind=JOB_KIND) + build_jobs, key=lambda j: j.id):
            rid = job.params.get("run_id") or job.name.removeprefix("jacobian.")
            if rid:
                runs[rid] = {
                    "run_id": rid,
                    "settings": job.params.get("settings") or build_settings.get(rid, {}),
                    "status": job.status,
                    "job_id": job.id,
                    "progress": {"done": job.progress_done, "total": job.progress_total, "message": job.message or ""},
                    "error": job.error,
                    "summary": None,
                }
        if self.root.exists():
            for d in sorted(self.root.iterdir()):
                m = read_manifest(d) if d.is_dir() else None
                if m is None or m.get("key") != d.name:
                    continue
                prev = runs.get(d.name, {})
                runs[d.name] = {
                    "run_id": d.name,
                    "settings": m["settings"],
                    "status": "done",
                    "job_id": prev.get("job_id"),
                    "progress": prev.get("progress"),
                    "error": None,
                    "summary": m.get("summary"),
                    "finished_at": m.get("finished_at"),
                }
        return sorted(runs.values(), key=lambda r: (r["status"] != "done", -(r["job_id"] or 0)))

    def start(self, s: RunSettings) -> dict[str, Any]:
        validate(s)
        rid = s.run_id
        with self._lock:
            if self._complete(rid):
                job = self.ws.jobs.latest_done(self._job_name(rid))
                return {"run_id": rid, "job_id": job.id if job else None, "status": "done", "existing": True}
            job = self.ws.jobs.latest(self._job_name(rid))
            if job is not None and job.status in ("queued", "running"):
                return {"run_id": rid, "job_id": job.id, "status": job.status, "existing": True}
            job = self.ws.jobs.create(JOB_KIND, self._job_name(rid), {"run_id": rid, "settings": s.to_dict()})

        from loupe.jobs.runner import run_job

        def work() -> None:
            try:
                run_job(self.ws.jobs, job.id, lambda ctx: self.compute(s, ctx.progress))
            except Exception:  # recorded on the job row
                pass

        self.executor.submit(work)
        return {"run_id": rid, "job_id": job.id, "status": "queued", "existing": False}

    def compute(self, s: RunSettings, progress: Callable[[float, float | None, str], None]) -> dict[str, Any]:
        """The job body: J, SVD, (experiments), artifacts. Progress: J columns (steps x chunks), then the
        SVD and the perturbation retrainings, on one 0..1 scale."""
        validate(s)
        cfg = s.train_config()
        dtype = getattr(torch, s.dtype)
        t0 = time.monotonic()
        w_exp = 0.15 if s.experiments else 0.0

        def p_j(done, total, msg):
            progress((1 - w_exp) * 0.98 * done / total, 1.0, msg)

        res = jac.run(cfg, chunk=min(jac.DEFAULT_CHUNK, s.n_params), dtype=dtype, progress=p_j)
        progress((1 - w_exp), 1.0, "SVD done")
        summary = res.spec.summary()
        results: dict[str, Any] = {
            "summary": summary,
            "metrics": res.metrics,
            "seconds": {"jacobian": round(res.seconds_jacobian, 1)},
        }
        if s.experiments:
            t1 = time.monotonic()
            model = jac.FlatMLP(cfg.width, cfg.depth, dtype=dtype)
            data = jac.load_data(cfg, dtype)
            rows = jac.perturbation_experiment(
                model,
                res.theta0,
                res.thetaT,
                res.spec,
                data,
                cfg,
                seed=cfg.seed,
                progress=lambda d, t, m: progress(1 - w_exp + w_exp * d / t, 1.0, m),
            )
            results["perturbation"] = {
                "eps": rows[0]["eps"] if rows else None,
                "rows": rows,
                "by_region": jac.summarize_perturbations(rows),
            }
            results["seconds"]["experiments"] = round(time.monotonic() - t1, 1)
        results["seconds"]["total"] = round(time.monotonic() - t0, 1)
        rid = s.run_id
        with atomic_dir(self.run_dir(rid)) as tmp:
            sp = res.spec
            save_tensors(
                tmp / "spectrum.safetensors",
                {
                    "singular_values": sp.singular_values.double(),
                    "alignment": sp.alignment.double(),
                    "V": sp.V.float(),
                    "theta0": res.theta0,
                    "thetaT": res.thetaT,
                },
            )
            (tmp / "results.json").write_text(json.dumps(results, indent=1))
            write_manifest(
                tmp,
                {
                    "key": rid,
                    "settings": s.to_dict(),
                    "summary": summary,
                    "seconds": results["seconds"],
                    "finished_at": time.time(),
                },
            )
        return {
            "run_id": rid,
            "dir": str(self.run_dir(rid)),
            "sigma_1": summary["sigma_1"],
            "bulk_fraction": summary["bulk_fraction"],
            "median_bulk_alignment": summary["median_bulk_alignment"],
        }

    # reading a run
    def _spectrum(self, run_id: str) -> dict[str, torch.Tensor]:
        return load_tensors(self.run_dir(run_id) / "spectrum.safetensors")

    def _bulk_basis(self, run_id: str, tol: float) -> torch.Tensor:
        if run_id not in self._bulk:
            t = self._spectrum(run_id)
            mask = jac.regions(t["singular_values"], tol)["bulk"]
            self._bulk[run_id] = t["V"][:, mask].double()
            if len(self._bulk) > 4:  # V of a paper-size run is 90 MB: keep a few
                self._bulk.pop(next(iter(self._bulk)))
        return self._bulk[run_id]

    def siblings(self, s: RunSettings, field: str, runs: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Finished runs (of `runs`, default: all) whose settings differ from `s` only in `field` (and in
        `experiments`)."""

        def rest(x: RunSettings) -> dict[str, Any]:
            return {k: v for k, v in x.to_dict().items() if k not in (field, "experiments")}

        out = []
        for r in self.list() if runs is None else runs:
            o = RunSettings.from_dict(r["settings"])
            if r["status"] == "done" and rest(o) == rest(s) and getattr(o, field) != getattr(s, field):
                out.append(r)
        return out

    def get(self, run_id: str) -> dict[str, Any]:
        m = self._complete(run_id)
        if m is None:
            job = self.ws.jobs.latest(self._job_name(run_id))
            if job is None:
                raise NotFound(f"no Jacobian run {run_id!r}; GET /api/jacobian/runs lists them")
            if job.status == "failed":
                raise Conflict(
                    f"run {run_id} failed (job {job.id}): {(job.error or '').splitlines()[0] if job.error else ''}"
                )
            pct = 100 * job.progress_done / job.progress_total if job.progress_total else 0
            raise Conflict(
                f"run {run_id} is not finished yet (job {job.id}, {job.status}, {pct:.0f}%); "
                "poll /api/jobs/{job_id}".replace("{job_id}", str(job.id))
            )
        s = RunSettings.from_dict(m["settings"])
        t = self._spectrum(run_id)
        results = json.loads((self.run_dir(run_id) / "results.json").read_text())
        summary = results["summary"]
        tol = summary["tol"]
        sv = t["singular_values"].tolist()
        al = t["alignment"].tolist()
        # siblings: same settings but another seed (overlap) or another control (overlay)
        runs = self.list()
        seeds = [(RunSettings.from_dict(r["settings"]), r["run_id"]) for r in self.siblings(s, "seed", runs)]
        controls = {
            f"control: {r['settings']['control']}": self._spectrum(r["run_id"])["singular_values"].tolist()
            for r in self.siblings(s, "control", runs)
        }
        overlaps = []
        if seeds:
            A = self._bulk_basis(run_id, tol)
            for o, rid in sorted(seeds, key=lambda x: x[0].seed):
                key = tuple(sorted((run_id, rid)))
                if key not in self._overlaps:
                    self._overlaps[key] = jac.subspace_overlap(A, self._bulk_basis(rid, tol))
                kb = self._bulk_basis(rid, tol).shape[1]
                overlaps.append(
                    {
                        "run_id": rid,
                        "seed": o.seed,
                        "overlap": self._overlaps[key],
                        "k": A.shape[1],
                        "k_other": kb,
                        "baseline": jac.overlap_baseline(A.shape[1], kb, len(sv)),
                    }
                )
        regions = {
            name: {**summary[name], "boundary": summary["boundaries"][name]} for name in ("chaotic", "bulk", "stable")
        }
        figures = {"spectrum": spectrum_figure(sv, summary, controls, tol), "alignment": alignment_figure(sv, al, tol)}
        pert = results.get("perturbation")
        if pert:
            figures["perturbation"] = perturbation_figure(pert["by_region"])
        if overlaps:
            figures["overlap"] = overlap_figure(overlaps)
        return {
            "run_id": run_id,
            "settings": s.to_dict(),
            "n_params": len(sv),
            "singular_values": sv,
            "alignment": al,
            "regions": regions,
            "summary": summary,
            "metrics": results["metrics"],
            "perturbation": pert,
            "seed_overlap": overlaps,
            "controls": sorted(controls),
            "seconds": results["seconds"],
            "figures": figures,
        }

    # -- layer Jacobians of the language model ---------------------------------------------------------
    def layer(
        self,
        prompt: str,
        position: int,
        hook_in: str,
        hook_out: str,
        model_id: str | None = None,
        top_k: int = 8,
        n_directions: int = 5,
    ) -> dict[str, Any]:
        from loupe.core import layer_jacobian as lj

        if self.models is None:
            raise Unprocessable("no language model service in this process")
        lm = self.models.get(model_id)
        bridge = lm.bridge
        hooks = bridge.hook_dict
        for h in (hook_in, hook_out):
            if h not in hooks:
                near = [n for n in sorted(hooks) if n.split(".")[-1] == h.split(".")[-1]][:6]
                raise Unprocessable(
                    f"unknown hook {h!r} for model {lm.id}" + (f"; e.g. {', '.join(near)}" if near else "")
                )
        ids = lm.encode_prompt(prompt)
        if not prompt or not ids:
            raise Unprocessable("the prompt is empty")
        if len(ids) > lm.n_ctx:
            raise Unprocessable(f"the prompt has {len(ids)} tokens; the model's context is {lm.n_ctx}")
        n = len(ids)
        if not -n <= position < n:
            raise Unprocessable(
                f"position {position} is outside the prompt's {n} tokens (0..{n - 1}, or negative from the end)"
            )
        p = position % n
        tokens = torch.tensor([ids])
        t0 = time.monotonic()
        lock = getattr(lm, "lock", None) or contextlib.nullcontext()
        with lock:  # hooks live on the shared model for the duration of these passes
            with torch.no_grad():
                _, cache = bridge.run_with_cache(tokens, names_filter=lambda name: name in (hook_in, hook_out))
            x0 = cache[hook_in][0, p].detach()
            y0 = cache[hook_out][0, p].detach()
            if x0.dim() != 1 or y0.dim() != 1:
                raise Unprocessable(
                    "both hooks must carry one vector per position (e.g. hook_resid_pre/post, "
                    "mlp.hook_post); attention-pattern hooks are not supported"
                )
            J = lj.jacobian(self._hooked(bridge, tokens, p, hook_in, hook_out), x0)
        U, S, Vh = torch.linalg.svd(J.double(), full_matrices=False)
        secs = time.monotonic() - t0
        W_U = getattr(bridge, "W_U", None)
        sae = self._sae_for(lm.id, hook_out)
        dirs = []
        for i in range(min(n_directions, S.numel())):
            u = U[:, i].float()
            d: dict[str, Any] = {"index": i, "sigma": float(S[i])}
            if W_U is not None and u.numel() == W_U.shape[0]:
                for sign, name in ((1, "top_tokens"), (-1, "bottom_tokens")):
                    tid, val = lj.top_tokens(sign * u, W_U.detach(), top_k)
                    d[name] = [{"token": lm.tokenizer.decode([t]), "id": t, "logit": v} for t, v in zip(tid, val)]
            if sae is not None:
                fid, val = lj.top_features(u, sae[1], top_k)
                fid2, val2 = lj.top_features(-u, sae[1], top_k)
                d["sae_id"] = sae[0]
                d["top_features"] = [{"feature": f, "cosine": v} for f, v in zip(fid, val)]
                d["bottom_features"] = [{"feature": f, "cosine": v} for f, v in zip(fid2, val2)]
            dirs.append(d)
        return {
            "model_id": lm.id,
            "prompt_tokens": [lm.tokenizer.decode([t]) for t in ids],
            "position": p,
            "token": lm.tokenizer.decode([ids[p]]),
            "hook_in": hook_in,
            "hook_out": hook_out,
            "shape": list(J.shape),
            "singular_values": S.tolist(),
            "directions": dirs,
            "frobenius_norm": float(J.norm()),
            "seconds": round(secs, 3),
            "definition": "d h_out[p] / d h_in[p], other positions' h_in held fixed (same-position block)",
        }

    @staticmethod
    def _hooked(bridge, tokens, p: int, hook_in: str, hook_out: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """x (the earlier activation at position p) -> the later activation at p: one forward with the
        activation at `hook_in`, position p, replaced by x, everything else as the prompt makes it."""

        def fn(x: torch.Tensor) -> torch.Tensor:
            out: dict[str, torch.Tensor] = {}

            def put(act, hook):
                act = act.clone()
                act[0, p] = x
                return act

            def grab(act, hook):
                out["y"] = act[0, p]
                return act

            bridge.run_with_hooks(tokens, fwd_hooks=[(hook_in, put), (hook_out, grab)])
            return out["y"]

        return fn

    def _sae_for(self, model_id: str, hook: str) -> tuple[str, torch.Tensor] | None:
        """The first SAE trained at `hook` (its id and decoder), cached per directory."""
        from loupe.services.saes import load_sae, sae_records

        for rec in sae_records(self.ws, model_id):
            if rec.get("hook_name") == hook:
                if rec["dir"] not in self._decoders:
                    self._decoders[rec["dir"]] = (rec["id"], load_sae(rec["dir"]).W_dec.detach().float())
                return self._decoders[rec["dir"]]
        return None
