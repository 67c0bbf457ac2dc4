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

import builtins
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from loupe.core import jacobian as jac
from loupe.core.config import Progress
from loupe.errors import Conflict, NotFound
from loupe.jobs.fanout import LOCAL, Units
from loupe.jobs.runner import JobRunner
from loupe.services.jacobian.figures import alignment_figure, overlap_figure, perturbation_figure, spectrum_figure
from loupe.services.jacobian.runs import JOB_KIND, RunSettings, validate
from loupe.services.workspace import Workspace
from loupe.storage.artifacts import atomic_dir, load_tensors, read_manifest, save_tensors, write_manifest


@dataclass(frozen=True)
class ColumnsWorker:
    """A worker factory of the Jacobian's chunks of tangent seeds (loupe.jobs.fanout)."""

    cfg: jac.TrainConfig
    dtype: str

    def __call__(self) -> jac.JacobianColumns:
        return jac.JacobianColumns(self.cfg, getattr(torch, self.dtype))


class JacobianService:
    """Training-Jacobian runs: started as jobs, stored as spectra, read with their figures and the
    runs they compare to (other seeds, controls)."""

    def __init__(self, ws: Workspace, jobs: JobRunner, build_run: RunSettings | None = None):
        self.ws = ws
        self.jobs = jobs
        self.build_run = build_run  # the run the world's build computes (its job row carries no settings)
        self._lock = threading.Lock()
        self._overlaps: dict[tuple[str, str], float] = {}
        self._bulk: dict[str, torch.Tensor] = {}

    # paths and state
    @property
    def root(self) -> Path:
        return self.ws.artifact("jacobian")

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def job_name(self, run_id: str) -> str:
        return f"jacobian.{run_id}"

    def complete(self, run_id: str) -> dict[str, Any] | None:
        m = read_manifest(self.run_dir(run_id))
        return m if m and m.get("key") == run_id else None

    def list(self) -> list[dict[str, Any]]:
        runs: dict[str, dict[str, Any]] = {}
        build_jobs = [j for j in self.ws.jobs.list(limit=500, kind="build") if j.name.startswith("jacobian.")]
        build_settings = {self.build_run.run_id: self.build_run.to_dict()} if self.build_run else {}
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
            if self.complete(rid):
                job = self.ws.jobs.latest_done(self.job_name(rid))
                return {"run_id": rid, "job_id": job.id if job else None, "status": "done", "existing": True}
            job = self.ws.jobs.latest(self.job_name(rid))
            if job is not None and job.status in ("queued", "running"):
                return {"run_id": rid, "job_id": job.id, "status": job.status, "existing": True}
            job = self.jobs.submit(
                JOB_KIND,
                self.job_name(rid),
                {"run_id": rid, "settings": s.to_dict()},
                lambda ctx: self.compute(s, ctx.progress, ctx.units()),
            )
        return {"run_id": rid, "job_id": job.id, "status": "queued", "existing": False}

    def compute(self, s: RunSettings, progress: Progress, units: Units = LOCAL) -> dict[str, Any]:
        """The job body: J, SVD, (experiments), artifacts. Progress: J columns (steps x chunks), then the
        SVD and the perturbation retrainings, on one 0..1 scale. On a cluster (`units` distributed) the
        chunks of tangent seeds run on its workers, progress counted per chunk."""
        validate(s)
        cfg = s.train_config()
        dtype = getattr(torch, s.dtype)
        t0 = time.monotonic()
        w_exp = 0.15 if s.experiments else 0.0

        def p_j(done: float, total: float | None, msg: str) -> None:
            assert total is not None  # core's loops always report their length
            progress((1 - w_exp) * 0.98 * done / total, 1.0, msg)

        def p_exp(done: float, total: float | None, msg: str) -> None:
            assert total is not None
            progress(1 - w_exp + w_exp * done / total, 1.0, msg)

        chunk = min(jac.DEFAULT_CHUNK, s.n_params)
        map_chunks = None
        if units.distributed:
            n_chunks = -(-s.n_params // chunk)

            def map_chunks(blocks: builtins.list[tuple[int, int]]) -> Iterator[torch.Tensor]:
                for i, cols in enumerate(units.map(ColumnsWorker(cfg, s.dtype), blocks)):
                    p_j(i + 1, n_chunks, f"J chunk {i + 1}/{n_chunks} ({chunk} tangents each)")
                    yield cols

        res = jac.run(cfg, chunk=chunk, dtype=dtype, progress=p_j, map_chunks=map_chunks)
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
                progress=p_exp,
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

    def siblings(
        self, s: RunSettings, field: str, runs: builtins.list[dict[str, Any]] | None = None
    ) -> builtins.list[dict[str, Any]]:
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
        m = self.complete(run_id)
        if m is None:
            job = self.ws.jobs.latest(self.job_name(run_id))
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
