"""Influence functions on a subject (a model and its training set): EK-FAC factors (kronfluence), a compact cache of
preconditioned training gradients, and queries over it (see `loupe.core.influence` for the maths).

Build (background steps, each a job with progress; the world's after demo.eval, another index's from
POST /api/influence/indexes after its examples step, see `training.py`):
    influence.factors   kronfluence EK-FAC on the MLP nn.Linear layers (or a LoRA adapter's), true Fisher
                        (labels sampled from the model): covariance -> eigendecomposition -> eigenvalue
                        correction. <index root>/factors/: kronfluence/ (kronfluence's own files, read by
                        precise mode), factors.safetensors (Q_A, Q_G, Lambda per layer), manifest.json
                        (per-layer damping = 0.1 x mean Lambda).
    influence.gradients every training sequence's whitened EK-FAC eigen-coordinates (all of them, or the
                        `cache_dim` with the most expected energy) at 2 bits each (`loupe.core.packed`;
                        safetensors shards of bit planes and block scales) + manifest.
Query: one gradient of the measurement, rotated, whitened and rounded, against every packed row; TF-IDF
candidate filtering (optional); the cache's top `rescore_candidates` re-scored with exact EK-FAC
(per-token terms) in fast mode; "precise" mode re-scores the candidates with kronfluence's exact
EK-FAC pairwise scores (per token).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from kronfluence.analyzer import Analyzer, prepare_model
from kronfluence.arguments import FactorArguments
from kronfluence.utils.dataset import DataLoaderKwargs
from torch import Tensor

from loupe.core import influence as I
from loupe.core import packed as P
from loupe.jobs.fanout import blocks
from loupe.jobs.pipeline import Step
from loupe.jobs.runner import JobContext
from loupe.services.activations import real_positions
from loupe.services.influence.config import ANALYSIS_NAME, CACHE_FORMAT, FACTORS_NAME
from loupe.services.influence.index import load_factors
from loupe.services.influence.training import ModelLoader, TrainingSet
from loupe.storage.artifacts import atomic_dir, fingerprint, load_tensors, save_tensors, write_manifest


class InfluencePipeline:
    """The steps of one index (`TrainingSet`): its examples (an index on a registered dataset), the
    EK-FAC factors, the gradient cache."""

    def __init__(self, ts: TrainingSet):
        self.ts = ts
        self.cfg = ts.cfg
        self.root = ts.root
        self.factors_dir = ts.factors_dir
        self.grads_dir = ts.gradients_dir
        fit_keys = ("covariance_max_examples", "lambda_max_examples", "batch_size", "damping_scale", "seed")
        # the world's index keeps the key it always had; another also names its examples and what it tracks
        extra = () if ts.examples is None else (ts.examples.key, ts.ref.target)
        self.factors_key = fingerprint(
            "influence-factors-v1", ts.model_key, {k: self.cfg.to_dict()[k] for k in fit_keys}, *extra
        )
        self.grads_key = fingerprint(
            "influence-grads-v3", self.factors_key, {k: self.cfg.to_dict()[k] for k in ("cache_dim", "shard_rows")}
        )

    def steps(self) -> list[Step]:
        ts = self.ts
        own = [
            Step(
                f"{ts.step_prefix}.factors",
                "influence factors",
                self.factors_dir,
                self.fit_factors,
                background=True,
                key=self.factors_key,
            ),
            Step(
                f"{ts.step_prefix}.gradients",
                "influence gradients",
                self.grads_dir,
                self.cache_gradients,
                background=True,
                key=self.grads_key,
            ),
        ]
        return ([ts.examples] if ts.examples is not None else []) + own

    def _train(self) -> dict[str, Tensor]:
        t = load_tensors(self.ts.tokens_path)
        if "real" not in t:  # the world's packed tokens: every position but padding
            t["real"] = real_positions(t["loss_mask"].bool())
        return t

    def fit_factors(self, ctx: JobContext) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.monotonic()
        tokens = self._train()
        n = tokens["input_ids"].shape[0]
        n_cov = min(n, cfg.covariance_max_examples or n)
        n_lam = min(n, cfg.lambda_max_examples or n)
        total = n_cov + n_lam
        # on_item reads these when it is called, so reassigning them moves the progress bar to the next stage
        base, stage = 0, "covariance"

        def on_item(i: int) -> None:
            ctx.progress(base + i + 1, total + 1, f"{stage}: sequence {i + 1:,}")

        ds = I.SequenceDataset(tokens["input_ids"], tokens["loss_mask"], tokens["real"], on_item=on_item)
        model, names = self.ts.load_model()
        task = I.make_task(names)
        model = prepare_model(model, task)
        fargs = FactorArguments(
            strategy="ekfac", use_empirical_fisher=False, covariance_max_examples=n_cov, lambda_max_examples=n_lam
        )
        torch.manual_seed(cfg.seed)  # the sampled labels of the true Fisher
        with atomic_dir(self.factors_dir) as tmp:
            an = Analyzer(ANALYSIS_NAME, model, task, cpu=True, disable_tqdm=True, output_dir=str(tmp / "kronfluence"))
            loader = DataLoaderKwargs(collate_fn=I.collate_cut)
            an.fit_covariance_matrices(
                FACTORS_NAME, ds, per_device_batch_size=cfg.batch_size, factor_args=fargs, dataloader_kwargs=loader
            )
            ctx.progress(n_cov, total + 1, "eigendecomposition")
            an.perform_eigendecomposition(FACTORS_NAME, factor_args=fargs)
            base, stage = n_cov, "eigenvalue correction"
            an.fit_lambda_matrices(
                FACTORS_NAME, ds, per_device_batch_size=cfg.batch_size, factor_args=fargs, dataloader_kwargs=loader
            )
            facs = I.factors_from_kronfluence(an.load_all_factors(FACTORS_NAME), cfg.damping_scale)
            tensors = {}
            for name, f in facs.items():
                tensors[f"{name}.q_a"], tensors[f"{name}.q_g"], tensors[f"{name}.lam"] = f.q_a, f.q_g, f.lam
            save_tensors(tmp / "factors.safetensors", tensors)
            summary = {
                "modules": names,
                "target": self.ts.ref.target,
                "n_train": n,
                "covariance_examples": n_cov,
                "lambda_examples": n_lam,
                "fisher": "true (labels sampled from the model)",
                "strategy": "ekfac",
                "damping": {name: f.damping for name, f in facs.items()},
                "damping_rule": f"{cfg.damping_scale} x mean(Lambda) per layer",
                "seconds": round(time.monotonic() - t0, 1),
            }
            write_manifest(tmp, {"key": self.factors_key, "config": cfg.to_dict(), **summary})
        ctx.progress(total + 1, total + 1, "done")
        return summary

    def cache_gradients(self, ctx: JobContext) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.monotonic()
        factors = load_factors(self.factors_dir)
        projs = I.make_projection(factors, cfg.cache_dim)
        n = int(self._train()["input_ids"].shape[0])
        dim = sum(p.dim for p in projs.values())
        units = ctx.units()
        worker = GradientWorker(
            self.ts.load_model,
            str(self.factors_dir.resolve()),
            str(self.ts.tokens_path.resolve()),
            cfg.cache_dim,
            cfg.batch_size,
        )
        parts = blocks(n, units.size(n, cfg.batch_size), cfg.batch_size)
        shards: list[dict[str, Any]] = []
        with atomic_dir(self.grads_dir) as tmp:
            buf: list[P.PackedRows] = []
            start = 0

            def flush() -> None:
                nonlocal buf, start
                if not buf:
                    return
                rows = P.concat(buf)
                fname = f"shard_{len(shards):04d}.safetensors"
                save_tensors(tmp / fname, P.to_tensors(rows))
                shards.append({"file": fname, "start": start, "rows": rows.n})
                start += rows.n
                buf = []

            # each unit's batches in order, flushed as one pass over all of them would (the same shards)
            for batches, (_, stop) in zip(units.map(worker, parts), parts):
                for rows in batches:
                    buf.append(rows)
                    if sum(b.n for b in buf) >= cfg.shard_rows:
                        flush()
                ctx.progress(stop, n, f"sequence {stop:,} of {n:,}")
            flush()
            summary = {
                "n_train": n,
                "dim": dim,
                "cache_dim": cfg.cache_dim,
                "format": CACHE_FORMAT,
                "bytes_per_sequence": -(-dim // P.BLOCK)
                * (P.BLOCK // 4 + 4),  # 2 bits a coordinate, a float32 scale a block
                "projection": I.describe_projection(projs),
                "captured_energy": {nm: I.captured_energy(factors[nm], p) for nm, p in projs.items()},
                "seconds": round(time.monotonic() - t0, 1),
            }
            write_manifest(tmp, {"key": self.grads_key, "factors_key": self.factors_key, "shards": shards, **summary})
        ctx.progress(n, n, f"done: {n:,} sequences x {dim:,} coordinates at 2 bits")
        return summary


@dataclass(frozen=True)
class GradientWorker:
    """A worker factory of the gradient cache's units (blocks of whole batches of training sequences):
    loads the model, the factors and the token file once, where the units run (loupe.jobs.fanout)."""

    load_model: ModelLoader  # the model as the index tracks it (a picklable loader: actors call it)
    factors_dir: str
    tokens_file: str
    cache_dim: int | None
    batch_size: int

    def __call__(self) -> Callable[[tuple[int, int]], list[P.PackedRows]]:
        factors = load_factors(Path(self.factors_dir))
        tokens = load_tensors(Path(self.tokens_file))
        mask = tokens["loss_mask"].bool()
        # an index's examples carry their real positions; the world's packed tokens: all but padding
        real = tokens["real"].bool() if "real" in tokens else real_positions(mask)
        return _GradientBlocks(
            self.load_model()[0],
            list(factors),
            I.make_projection(factors, self.cache_dim),
            tokens["input_ids"],
            mask,
            real,
            self.batch_size,
        )


@dataclass(frozen=True)
class _GradientBlocks:
    model: Any
    names: list[str]
    projs: dict[str, I.Projection]
    ids: Tensor
    mask: Tensor
    real: Tensor
    batch_size: int

    def __call__(self, unit: tuple[int, int]) -> list[P.PackedRows]:
        """Each batch of sequences [start, stop): their 2-bit packed, preconditioned gradients."""
        out = []
        for s in range(unit[0], unit[1], self.batch_size):
            sl = slice(s, min(unit[1], s + self.batch_size))
            grads = I.logprob_layer_grads(self.model, self.names, self.ids[sl], self.mask[sl], self.real[sl])
            out.append(
                P.pack_rows(torch.cat([I.compact_sequence(a, g, self.projs[nm]) for nm, (a, g) in grads.items()], 1))
            )
        return out
