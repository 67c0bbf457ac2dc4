"""Feature dashboards, Loupe against the peer: SAEDashboard 0.8 (the library behind Neuronpedia's
feature pages) on the same SAE and the same token sequences, in one run on one machine.

Run in Loupe's venv. The peer runs in its own environment (TransformerLens 2.x, transformers 4.56,
numpy 2: `bash bench/peers/saedashboard/setup.sh` makes it) as a subprocess: the driver
bench/peers/saedashboard/driver.py.

Both start from token ids and run the model:
  Loupe  caches the hook's activations over the sequences (write_activation_cache, float32), then one
         streaming pass (build_dashboards) for EVERY feature: density, max, mean, histogram, top-k and
         interval-sampled examples with their context windows' per-token activations, token and domain
         enrichment, logit effects, cosine neighbours, capacity, neuron effects; then renders the
         feature pages (write_pages; timed apart).
  Peer   SaeVisRunner.run for the chosen features: the model to the hook, the SAE encode per feature
         batch, rolling correlations with neurons and other features (feature tables), logit table and
         histogram, activation histogram, quantiles, top-k and interval (quantile) groups with their
         windows' per-token activations, each example as a SequenceData object.
Both sides use the world's dashboard sizes (top-k, intervals, examples per interval, window, histogram
bins, logit rows). SAEDashboard only picks examples whose whole window fits in the sequence (positions
left+1 .. n_ctx-right-1); Loupe picks from every cached position and clips the window, so the
comparison reports overlap both over all of Loupe's top-k and over the positions the peer can pick.

usage: python bench/dashboards_peer.py --workspace W --sae demo-resid1 --preset micro [--tokens N]
           [--peer-features all|N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent
PEER = ROOT / "peers" / "saedashboard"


def locate(art: Path, sae_dir: Path, sae: Any) -> tuple[str, Path, Path, dict[str, Any] | None]:
    """(model_id, model directory, train token file, the hook's existing activation cache manifest) of
    an SAE Loupe trained, by the workspace's layout."""
    from loupe.storage.artifacts import read_manifest

    meta = sae.cfg.metadata
    model_id = (read_manifest(sae_dir) or {}).get("model_id") or getattr(meta, "model_id", None) or "demo"
    if model_id == "demo":
        model_dir, tokens = art / "model", art / "tokens" / "train.safetensors"
    else:
        model_dir = art / "models" / model_id
        tokens = art / "tokens" / meta.dataset_id / f"{model_id}-{meta.context_size}" / "train.safetensors"
    caches = sorted((art / "activations" / model_id).glob(f"**/{meta.hook_name}/manifest.json"))
    return model_id, model_dir, tokens, (read_manifest(caches[0].parent) if caches else None)


class LoupeSide:
    """Loupe's activation cache, dashboard pass and pages over `toks`: the model loaded and both steps
    warmed up on a few sequences (thread pools, allocator) at construction, untimed; `once` times them."""

    def __init__(
        self,
        sae: Any,
        model_dir: Path,
        toks: dict[str, torch.Tensor],
        first_position: bool,
        domains: list[str],
        cfg: Any,
    ):
        from transformers import AutoTokenizer

        from loupe.services.activations import ActivationCacheConfig
        from loupe.services.models import load_bridge

        self.sae, self.toks, self.domains, self.cfg = sae, toks, domains, cfg
        self.model = load_bridge(str(model_dir))[0]
        self.tok = AutoTokenizer.from_pretrained(str(model_dir))
        self.hook = sae.cfg.metadata.hook_name
        self.cc = ActivationCacheConfig(hook_name=self.hook, dtype="float32", first_position=first_position)
        with tempfile.TemporaryDirectory(prefix="loupe-warm-") as tmp:
            self.once(Path(tmp), {k: v[:4] for k, v in toks.items()})

    def once(
        self, tmp: Path, toks: dict[str, torch.Tensor] | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, float], dict[str, torch.Tensor]]:
        from loupe.services.activations import ActivationCache, write_activation_cache
        from loupe.services.saes.dashboards import build_dashboards, vocab_strings
        from loupe.services.saes.pages import write_pages

        toks = toks or self.toks
        seconds = {}
        t0 = time.perf_counter()
        write_activation_cache(self.model, {"train": toks}, self.cc, tmp / "cache", meta={"domains": self.domains})
        seconds["cache"] = time.perf_counter() - t0
        cache = ActivationCache(tmp / "cache")
        t0 = time.perf_counter()
        arrays, rows, _ = build_dashboards(
            self.sae, self.model, self.tok, cache, toks["input_ids"], self.domains, self.cfg
        )
        seconds["dashboards"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        page_meta = {"sae_id": "bench", "hook_name": self.hook, "d_sae": len(rows)}
        write_pages(tmp / "pages.bin", arrays, rows, self.cfg, vocab_strings(self.tok), page_meta)
        seconds["pages"] = time.perf_counter() - t0
        check = cache.load("train", max_tokens=1024, fields=["acts", "seq", "pos"])
        return arrays, seconds, check


def run_peer(
    python: Path, model_dir: Path, sae_dir: Path, inputs: dict[str, torch.Tensor], run: dict, out: Path
) -> dict:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in inputs.items()}, str(out / "peer_input.safetensors"))
    (out / "peer_config.json").write_text(json.dumps(run))
    cmd = [str(python), str(PEER / "driver.py"), "--model", str(model_dir), "--sae", str(sae_dir)]
    cmd += ["--input", str(out / "peer_input.safetensors"), "--config", str(out / "peer_config.json")]
    cmd += ["--out", str(out / "peer_result.json")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": ""}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    res: dict = json.loads((out / "peer_result.json").read_text())
    res["seconds"]["process"] = round(time.perf_counter() - t0, 3)
    return res


def compare(
    arrays: dict[str, torch.Tensor], peer: dict, k: int, n_ctx: int, left: int, right: int, real: torch.Tensor
) -> dict[str, Any]:
    """Per feature: Loupe's top-k (sequence, position) set against the peer's, over all of Loupe's
    examples and over those at positions the peer can pick; the activations of shared examples; each
    feature's largest activation at a position the peer can pick, on both sides."""
    overlap, overlap_pickable, max_rel = [], [], []
    tol = 1e-4  # the peer rounds activations to 4 decimals
    misses_not_ties = 0
    outside = {"first_position": 0, "start": 0, "end": 0}
    n_loupe = n_peer_not_cached = full = 0
    act_diff = 0.0
    for f_str, p in peer["features"].items():
        f = int(f_str)
        vals = arrays["ex_values"][f, :k]
        ours = {
            (int(s), int(q)): float(v)
            for s, q, v in zip(arrays["ex_seq"][f, :k], arrays["ex_pos"][f, :k], vals)
            if v > 0
        }
        theirs = {(int(s), int(q)): float(v) for s, q, v in p["top"] if v > 0}
        n_peer_not_cached += sum(not bool(real[s, q]) for s, q in theirs)
        if not ours:
            continue
        n_loupe += len(ours)
        full += len(ours) == k
        pickable = {key for key in ours if left + 1 <= key[1] < n_ctx - right}
        for _, q in ours.keys() - pickable:
            outside["first_position" if q == 0 else "start" if q <= left else "end"] += 1
        overlap.append(len(ours.keys() & theirs.keys()) / len(ours))
        for key in ours.keys() & theirs.keys():
            act_diff = max(act_diff, abs(ours[key] - theirs[key]))
        if pickable:
            # every example of Loupe's top-k that the peer could pick must rank in the peer's top-k too;
            # the largest of them is the feature's largest activation at a pickable position
            overlap_pickable.append(len(pickable & theirs.keys()) / len(pickable))
            # a miss is a disagreement unless it ties the peer's k-th activation (equal activations,
            # e.g. the same tokens in the same context, are ordered arbitrarily by either top-k)
            kth = min(theirs.values(), default=0.0) if len(theirs) == k else 0.0
            misses_not_ties += sum(ours[key] > kth + tol for key in pickable - theirs.keys())
            best = max(ours[key] for key in pickable)
            max_rel.append(abs(best - max(theirs.values(), default=0.0)) / best)

    def summary(xs: list[float]) -> dict[str, Any]:
        return {
            "features": len(xs),
            "mean": round(statistics.fmean(xs), 4) if xs else None,
            "median": round(statistics.median(xs), 4) if xs else None,
            "min": round(min(xs), 4) if xs else None,
            "share_equal_1": round(sum(x == 1.0 for x in xs) / len(xs), 4) if xs else None,
        }

    return {
        "features_with_examples": len(overlap),
        "features_with_full_top_k": full,
        "topk_overlap": summary(overlap),
        "topk_overlap_pickable_positions": summary(overlap_pickable),
        "pickable_misses_not_ties": misses_not_ties,
        "loupe_examples": n_loupe,
        "loupe_examples_the_peer_cannot_pick": outside,
        "peer_examples_at_positions_loupe_does_not_cache": n_peer_not_cached,
        "shared_examples_max_abs_activation_diff": round(act_diff, 6),
        "max_pickable_activation_rel_diff": {
            "features": len(max_rel),
            "max": round(max(max_rel), 6) if max_rel else None,
            "median": round(statistics.median(max_rel), 6) if max_rel else None,
        },
    }


def main() -> None:
    from loupe.services.activations import real_positions, sequences_for
    from loupe.services.saes.training import load_sae
    from loupe.storage.artifacts import load_tensors
    from loupe.worlds.presets import DASHBOARD_PRESETS

    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--sae", required=True, help="an SAE id under <workspace>/artifacts/saes")
    ap.add_argument("--preset", choices=sorted(DASHBOARD_PRESETS), required=True, help="the world's dashboard sizes")
    ap.add_argument("--tokens", type=int, default=None, help="cached tokens (whole sequences; default the preset's)")
    ap.add_argument("--peer-features", default="all", help="'all' or N: the first N features for the peer")
    ap.add_argument("--peer-python", type=Path, default=PEER / ".venv" / "bin" / "python")
    ap.add_argument("--repeats", type=int, default=1, help="Loupe-then-peer pairs timed (medians reported)")
    ap.add_argument("--out", type=Path, default=None, help="where the exchanged files go (default: a temp dir)")
    args = ap.parse_args()
    if not args.peer_python.exists():
        sys.exit(f"no peer environment at {args.peer_python}: run bash bench/peers/saedashboard/setup.sh")

    load_start = os.getloadavg()
    art = args.workspace / "artifacts"
    sae_dir = art / "saes" / args.sae
    sae = load_sae(sae_dir)
    model_id, model_dir, tokens_file, cache_manifest = locate(art, sae_dir, sae)
    first_position = bool((cache_manifest or {}).get("config", {}).get("first_position", True))
    toks_all = load_tensors(tokens_file)
    domains = list((cache_manifest or {}).get("domains") or [])
    if not domains:
        domains = [f"domain {i}" for i in range(int(toks_all["domain_ids"].max()) + 1)]

    cfg = DASHBOARD_PRESETS[args.preset]
    budget = args.tokens or cfg.max_tokens
    real_all = real_positions(toks_all["loss_mask"], first_position)
    n_seq = sequences_for(real_all, budget)
    toks = {k: toks_all[k][:n_seq] for k in ("input_ids", "loss_mask", "domain_ids")}
    real = real_all[:n_seq]
    n_real = int(real.sum())
    cfg = replace(cfg, max_tokens=n_real)
    n_ctx = int(toks["input_ids"].shape[1])

    out = args.out or Path(tempfile.mkdtemp(prefix="dashboards-peer-"))
    out.mkdir(parents=True, exist_ok=True)
    d_sae = int(sae.cfg.d_sae)
    feats: Any = "all" if args.peer_features == "all" else list(range(min(int(args.peer_features), d_sae)))
    run = {
        "features": feats,
        "top_k": cfg.top_k,
        "n_intervals": cfg.n_intervals,
        "per_interval": cfg.per_interval,
        "hist_bins": cfg.hist_bins,
        "left": cfg.left,
        "right": cfg.right,
        "n_logits": cfg.n_logits,
        "ignore_positions": [] if first_position else [0],
    }
    loupe = LoupeSide(sae, model_dir, toks, first_position, domains, cfg)
    loupe_reps: list[dict[str, float]] = []
    peer_reps: list[dict[str, float]] = []
    # Loupe then the peer, `repeats` times: the machine's load drifts, so each pair runs close in time
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="loupe-side-") as tmp:
            arrays, loupe_s, check = loupe.once(Path(tmp))
        loupe_reps.append(loupe_s)
        inputs = {
            "input_ids": toks["input_ids"].long(),
            "check_acts": check["acts"].float(),
            "check_seq": check["seq"].long(),
            "check_pos": check["pos"].long(),
        }
        peer = run_peer(args.peer_python, model_dir, sae_dir, inputs, run, out)
        peer_reps.append(peer["seconds"])
    k = cfg.top_k
    loupe_top = {
        f: [
            [s, q, round(v, 4)]
            for s, q, v in zip(*(arrays[a][f, :k].tolist() for a in ("ex_seq", "ex_pos", "ex_values")))
        ]
        for f in range(int(sae.cfg.d_sae))
    }
    (out / "loupe_topk.json").write_text(json.dumps(loupe_top))

    loupe_compute = [r["cache"] + r["dashboards"] for r in loupe_reps]
    loupe_pages = [c + r["pages"] for c, r in zip(loupe_compute, loupe_reps)]
    peer_run = [r["run"] for r in peer_reps]
    result = {
        "sae": args.sae,
        "model_id": model_id,
        "hook": sae.cfg.metadata.hook_name,
        "architecture": sae.cfg.architecture() if callable(sae.cfg.architecture) else sae.cfg.architecture,
        "d_sae": d_sae,
        "sequences": n_seq,
        "n_ctx": n_ctx,
        "tokens_cached_by_loupe": n_real,
        "tokens_run_by_peer": peer["tokens"],
        "first_position": first_position,
        "loupe_features": d_sae,
        "peer_features": peer["n_features"],
        "loupe_seconds": [{k: round(v, 2) for k, v in r.items()} for r in loupe_reps],
        "peer_seconds": peer_reps,
        "ratio_peer_over_loupe_cache_plus_dashboards": {
            "median": round(statistics.median(peer_run) / statistics.median(loupe_compute), 2),
            "per_repeat": [round(p / lc, 2) for p, lc in zip(peer_run, loupe_compute)],
        },
        "ratio_peer_over_loupe_with_pages": round(statistics.median(peer_run) / statistics.median(loupe_pages), 2),
        "activation_check": peer["activation_check"],
        "comparison": compare(arrays, peer, cfg.top_k, n_ctx, cfg.left, cfg.right, real),
        "peer_versions": peer["versions"],
        "torch_threads": torch.get_num_threads(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "files": str(out),
    }
    (out / "comparison.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
