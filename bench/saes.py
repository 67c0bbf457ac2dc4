"""SAE serving and caching benchmarks on a built workspace (ratios in one run, same machine):

  caching   tokens/s of Loupe's activation cache (hook-only caching, forward stopped after the last
            needed layer, written to sharded safetensors) against a plain TransformerLens
            `run_with_cache(names_filter=hook)` loop over the same sequences, kept in memory
  latency   feature-dashboard requests under 16 concurrent clients against the same server's
            trivial JSON endpoint (/api/health): p50 / p99 in ms

usage: python bench/saes.py --workspace DIR [--sae demo-mlp0] [--sequences 400] [--requests 30]
       python bench/saes.py --workspace DIR --world smollm2 --sae smollm2-resid15 \
           --hook blocks.15.hook_resid_pre --model-dir DIR/artifacts/models/smollm2 \
           --tokens DIR/artifacts/tokens/python-docs/smollm2-128/train.safetensors
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from harness import latency_stats, server


def bench_caching(ws: Path, hook: str, n_seq: int, model_dir: Path | None = None, tokens: Path | None = None) -> dict:
    from loupe.services.activations import ActivationCacheConfig, write_activation_cache
    from loupe.services.models import load_bridge
    from loupe.storage.artifacts import load_tensors

    art = ws / "artifacts"
    model = load_bridge(str(model_dir or art / "model"))[0]
    toks = load_tensors(tokens or art / "tokens" / "train.safetensors")
    sub = {k: v[:n_seq] for k, v in toks.items()}
    n_tokens = int(sub["input_ids"].numel())
    tmp = Path(tempfile.mkdtemp())
    try:
        t0 = time.perf_counter()
        write_activation_cache(model, {"train": sub}, ActivationCacheConfig(hook_name=hook), tmp / "cache")
        ours = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp)
    t0 = time.perf_counter()
    kept = []
    with torch.no_grad():
        for s in range(0, n_seq, 32):
            _, cache = model.run_with_cache(sub["input_ids"][s : s + 32], names_filter=[hook])
            kept.append(cache[hook].clone())
    plain = time.perf_counter() - t0
    return {
        "hook": hook,
        "sequences": n_seq,
        "positions": n_tokens,
        "loupe_s": round(ours, 2),
        "run_with_cache_s": round(plain, 2),
        "loupe_tokens_per_s": round(n_tokens / ours),
        "run_with_cache_tokens_per_s": round(n_tokens / plain),
        "ratio": round(plain / ours, 2),
    }


def _get(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        r.read()
        assert r.status == 200
    return (time.perf_counter() - t0) * 1000


def _load(urls: list[str], clients: int) -> dict:
    with ThreadPoolExecutor(clients) as ex:
        return latency_stats(list(ex.map(_get, urls)))


def bench_latency(ws: Path, sae_id: str, clients: int, per_client: int, world: str = "demo") -> dict:
    """The server runs in its own process (as `loupe serve` does, without background jobs), so the
    clients' threads do not share its interpreter lock."""
    with server(ws, world) as (base, _):
        d_sae = json.loads(urllib.request.urlopen(f"{base}/api/saes/{sae_id}").read())["d_sae"]
        _get(f"{base}/api/saes/{sae_id}/features/0")  # warm: loads the tokenizer once
        rng = random.Random(0)
        n = clients * per_client
        return {
            "clients": clients,
            "health": _load([f"{base}/api/health"] * n, clients),
            "feature_page": _load(
                [f"{base}/api/saes/{sae_id}/features/{rng.randrange(d_sae)}" for _ in range(n)], clients
            ),
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--sae", default="demo-mlp0")
    ap.add_argument("--hook", default="blocks.0.mlp.hook_post")
    ap.add_argument("--sequences", type=int, default=400)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=30, help="per client")
    ap.add_argument("--world", default="demo")
    ap.add_argument("--model-dir", type=Path, default=None, help="default: the demo model of the workspace")
    ap.add_argument("--tokens", type=Path, default=None, help="default: the demo world's train tokens")
    args = ap.parse_args()
    res = {
        "threads": torch.get_num_threads(),
        "caching": bench_caching(args.workspace, args.hook, args.sequences, args.model_dir, args.tokens),
        "latency": bench_latency(args.workspace, args.sae, args.clients, args.requests, args.world),
    }
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
