"""The heavy jobs in-process and on a local Ray (1 and 2 actors), side by side in one run, and the
per-unit figures behind a costed plan for dashboards and influence caches far beyond the micro world.

  steps  the micro world's fanned-out steps (the two activation caches, the two dashboards, the
         training Jacobian, the 2-bit gradient cache) and a steering sweep, rebuilt from the same
         built workspace with LOUPE_EXECUTOR=thread, then ray with 1 and 2 actors (a warm pool: actor
         start-up and imports are timed apart); ratios against thread; the artifacts checked equal.
  units  per-unit costs: a TopK SAE's encode (d_in 576, the SmolLM2 residual) at 16k and 128k
         features on one thread; the driver's merge (sort of int64 code keys) and the top-k reduce
         per element; the gradient cache per sequence (the micro model) and its bytes.

usage: python bench/ray_executor.py [--workspace BUILT_MICRO_WORKSPACE] [--out bench/last_run.json]
(without --workspace it builds a micro world in a temporary directory first, ~2 min).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_micro(root: Path) -> None:
    from tests.conftest import micro_settings

    from loupe.jobs.executors import InlineExecutor
    from loupe.jobs.pipeline import Pipeline
    from loupe.worlds import Build, open_world

    world, c = open_world(micro_settings(root), executor=InlineExecutor())
    Build(world, c).run()
    steps = c.influence_pipeline().steps()
    Pipeline(c.jobs, steps).run(steps)
    c.close()


def time_steps(src: Path, dest: Path, fanout) -> dict[str, float]:
    """Seconds per fanned-out step (and a steering sweep) rebuilt on a copy of `src`."""
    from tests.api.test_ray_executor import _fresh_copy
    from tests.conftest import micro_settings

    from loupe.jobs.executors import InlineExecutor
    from loupe.jobs.pipeline import Pipeline
    from loupe.worlds import Build, open_world

    shutil.rmtree(dest, ignore_errors=True)
    _fresh_copy(src, dest)
    world, c = open_world(micro_settings(dest), executor=InlineExecutor(), fanout=fanout)
    out: dict[str, float] = {}
    try:
        build = Build(world, c)
        steps = [s for s in build.steps if not s.is_complete()] + c.influence_pipeline().steps()[1:]
        last = [time.monotonic()]

        def done(step) -> None:
            now = time.monotonic()
            out[step.name] = now - last[0]
            last[0] = now

        def skipped(step) -> None:
            last[0] = time.monotonic()

        Pipeline(c.jobs, steps).run(steps, on_skip=skipped, on_done=done)
        t0 = time.monotonic()
        methods = ["none", "ablation", "addition", "ace"]
        c.steering.evaluate("demo-refusal", methods, [0.0, 0.5, 1.0], limit=64, wait=True)
        out["steering sweep (8 points, 64+64 prompts)"] = time.monotonic() - t0
    finally:
        c.close()
    return out


def same_artifacts(a: Path, b: Path) -> bool:
    sys.path.insert(0, str(ROOT))
    from tests.api.test_ray_executor import assert_same_artifacts

    try:
        assert_same_artifacts(a, b)
    except AssertionError as e:
        print("  artifacts differ:", e)
        return False
    return True


def warm_pool(fanout) -> float:
    """Start the actors and import what the units import (torch, transformers, TransformerLens)."""
    t0 = time.monotonic()
    list(fanout.map(_Importer(), list(range(2 * fanout.workers))))
    return time.monotonic() - t0


class _Importer:
    def __call__(self):
        import loupe.services.influence.build  # noqa: F401  (what the units need, imported once)
        import loupe.services.saes.build  # noqa: F401

        return lambda u: u


def unit_costs() -> dict[str, float]:
    """Per-unit figures on one thread (a Ray actor's share of a core)."""
    from sae_lens import TopKSAE, TopKSAEConfig

    from loupe.core import sae_dashboards as D

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out: dict[str, float] = {}
    d_in, n_tok = 576, 2048
    x = torch.randn(n_tok, d_in)
    for d_sae in (16_384, 131_072):
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=32))
        with torch.no_grad():
            sae.encode(x[:256])
            t0 = time.perf_counter()
            for s in range(0, n_tok, 512):
                sae.encode(x[s : s + 512])
            out[f"encode_tokens_per_s_{d_sae}"] = n_tok / (time.perf_counter() - t0)
        del sae
    n = 20_000_000
    keys = torch.randint(0, 1 << 40, (n,))
    t0 = time.perf_counter()
    D.sort_int64(keys)
    out["merge_sort_ns_per_code"] = (time.perf_counter() - t0) / n * 1e9
    n = 4_000_000
    f = torch.randint(0, 16_384, (n,))
    r = torch.randperm(n)
    v = torch.rand(n)
    t0 = time.perf_counter()
    D.top_k_candidates(f, r, v, 20)
    out["topk_reduce_ns_per_candidate"] = (time.perf_counter() - t0) / n * 1e9
    torch.set_num_threads(threads)
    return out


def gradient_costs(ws: Path, step_s: float) -> dict[str, float]:
    m = json.loads((ws / "artifacts" / "influence" / "gradients" / "manifest.json").read_text())
    return {
        "micro_sequences": m["n_train"],
        "micro_bytes_per_sequence": m["bytes_per_sequence"],
        "micro_sequences_per_s_in_process": m["n_train"] / step_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "last_run.json")
    a = ap.parse_args()
    from loupe.jobs.fanout import LocalFanout
    from loupe.jobs.ray_fanout import RayFanout

    tmp = Path(tempfile.mkdtemp(prefix="loupe-ray-bench-"))
    src = a.workspace or tmp / "micro"
    if a.workspace is None:
        t0 = time.monotonic()
        build_micro(src)
        print(f"micro world built in {time.monotonic() - t0:.0f}s")
    results: dict[str, dict[str, float]] = {}
    extra: dict[str, float | bool] = {}
    results["thread"] = time_steps(src, tmp / "thread", LocalFanout())
    print("thread", {k: round(v, 2) for k, v in results["thread"].items()}, flush=True)
    # the control: in-process with one torch thread, as a Ray actor computes (Ray sets OMP_NUM_THREADS
    # to an actor's 1 CPU); on a loaded 2-core machine torch's default of 2 threads can be far slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results["thread1"] = time_steps(src, tmp / "thread1", LocalFanout())
    finally:
        torch.set_num_threads(threads)
    extra["thread_torch_threads"] = threads
    print("thread1", {k: round(v, 2) for k, v in results["thread1"].items()}, flush=True)
    for workers in (1, 2):
        f = RayFanout("", workers=workers, object_store_mb=80)
        t0 = time.monotonic()
        f.actors()
        extra[f"ray{workers}_start_s"] = time.monotonic() - t0
        extra[f"ray{workers}_warm_s"] = warm_pool(f)
        try:
            results[f"ray{workers}"] = time_steps(src, tmp / f"ray{workers}", f)
        finally:
            f.shutdown()
        extra[f"ray{workers}_same_artifacts"] = same_artifacts(tmp / "thread", tmp / f"ray{workers}")
        print(f"ray{workers}", {k: round(v, 2) for k, v in results[f"ray{workers}"].items()}, flush=True)
    units = unit_costs()
    grads = gradient_costs(tmp / "thread", results["thread"]["influence.gradients"])
    print(json.dumps({"extra": extra, "units": units, "gradients": grads}, indent=1))
    cols = ("thread", "thread1", "ray1", "ray2")
    print(
        "\n| step | in-process (s) | in-process, 1 torch thread (s) | ray, 1 actor (s) | ray, 2 actors (s) "
        "| ray 1 / in-process 1 thread | ray 2 / in-process 1 thread | ray 2 / in-process |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rows = [(name, [results[c].get(name, float("nan")) for c in cols]) for name in results["thread"]]
    rows.append(("all", [sum(results[c].values()) for c in cols]))
    for name, (t, t1, r1, r2) in rows:
        print(
            f"| {name} | {t:.2f} | {t1:.2f} | {r1:.2f} | {r2:.2f} | {r1 / t1:.2f}x | {r2 / t1:.2f}x | {r2 / t:.2f}x |"
        )
    a.out.write_text(json.dumps({"steps": results, "extra": extra, "units": units, "gradients": grads}, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
