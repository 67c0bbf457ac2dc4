"""Feature dashboards: Loupe's one streaming pass against one pass per batch of features.

The baseline is how batched dashboard builders work (SAEDashboard, the code behind Neuronpedia's
pages, runs its data pass once per batch of features): for every batch of `--batch` features it
streams the same cached activations again, encodes them (a TopK SAE has to compute every
pre-activation to know which k survive, so each pass is a full encode), keeps that batch's columns
dense, and computes from them what the one pass computes from activations: top-k examples, max,
histogram, interval samples and the per-token activations in each example's context window (not
the token/domain enrichment, logits, neighbours or capacity, which the one pass also computes). Both run on
the same SAE, the same tokens, in the same process, one after the other; the ratio is the result.

usage: python bench/dashboards.py --workspace DIR --sae demo-resid2 [--tokens 100000] [--batch 128]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def baseline(sae, cache, n_tokens: int, batch: int, cfg) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Per-feature-batch passes computing, for the batch's features, what the one pass computes from
    the activations: top-k, max, histogram, interval samples, and per-token activations over each
    example's context window. Returns (seconds, top values [d_sae, k], top rows [d_sae, k])."""
    d_sae = int(sae.cfg.d_sae)
    tops_v, tops_i = [], []
    g = torch.Generator().manual_seed(0)
    offsets = torch.arange(-cfg.left, cfg.right + 1)
    t0 = time.perf_counter()
    for f0 in range(0, d_sae, batch):
        cols = slice(f0, min(f0 + batch, d_sae))
        parts, seqs, n = [], [], 0
        for shard in cache.iter_shards("train", ["acts", "seq"]):
            x = shard["acts"][: max(0, n_tokens - n)].float()
            if x.shape[0] == 0:
                break
            seqs.append(shard["seq"][: x.shape[0]].long())
            for s in range(0, x.shape[0], cfg.batch_size):
                with torch.no_grad():
                    parts.append(sae.encode(x[s : s + cfg.batch_size])[:, cols].clone())
            n += x.shape[0]
        acts = torch.cat(parts)  # [n_tokens, batch] dense
        seq = torch.cat(seqs)
        top_v, top_i = acts.topk(min(cfg.top_k, acts.shape[0]), dim=0)
        tops_v.append(top_v.T)
        tops_i.append(top_i.T)
        mx = acts.max(0).values.clamp(min=1e-12)
        bins = (acts / mx * cfg.hist_bins).long().clamp(max=cfg.hist_bins - 1)
        ibins = (acts / mx * cfg.n_intervals).long().clamp(max=cfg.n_intervals - 1)
        fires = acts > 0
        examples = torch.full((acts.shape[1], cfg.n_intervals * cfg.per_interval), -1, dtype=torch.long)
        for j in range(acts.shape[1]):
            torch.bincount(bins[fires[:, j], j], minlength=cfg.hist_bins)
            rows = torch.nonzero(fires[:, j]).ravel()
            # interval samples: a random order inside each bin, the first per_interval of each
            order = torch.argsort(ibins[rows, j].double() + torch.rand(rows.numel(), generator=g, dtype=torch.float64))
            b_sorted = ibins[rows[order], j]
            size = torch.bincount(b_sorted, minlength=cfg.n_intervals)
            start = torch.cumsum(size, 0) - size
            k = torch.arange(cfg.per_interval)
            ok = k[None, :] < size[:, None]
            pick = (start[:, None] + k[None, :]).clamp(max=max(rows.numel() - 1, 0))
            if rows.numel():
                examples[j] = torch.where(ok, rows[order][pick], -1).ravel()
        ex = torch.cat([top_i.T, examples], dim=1)  # [batch, E] example rows
        win = ex[..., None] + offsets  # the window's rows in the cache
        inside = (ex[..., None] >= 0) & (win >= 0) & (win < acts.shape[0])
        win_c = win.clamp(0, acts.shape[0] - 1)
        inside &= seq[win_c] == seq[ex.clamp(min=0)][..., None]
        feat = torch.arange(acts.shape[1])[:, None, None].expand_as(win_c)
        torch.where(inside, acts[win_c, feat], 0.0)  # per-token activations in each window
    return time.perf_counter() - t0, torch.cat(tops_v), torch.cat(tops_i)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--sae", default="demo-resid2")
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()

    from dataclasses import replace

    from transformers import AutoTokenizer

    from loupe.demo.corpus import DOMAINS
    from loupe.services.activations import ActivationCache
    from loupe.services.models import load_bridge
    from loupe.services.saes.configs import DashboardConfig
    from loupe.services.saes.dashboards import build_dashboards
    from loupe.services.saes.training import load_sae
    from loupe.storage.artifacts import load_tensors, read_manifest

    art = args.workspace / "artifacts"
    sae = load_sae(art / "saes" / args.sae)
    hook = sae.cfg.metadata.hook_name
    model_id = (read_manifest(art / "saes" / args.sae) or {}).get("model_id", "demo")
    cache = ActivationCache(art / "activations" / model_id / hook)
    model = load_bridge(str(art / "model"))[0]
    tok = AutoTokenizer.from_pretrained(str(art / "model"))
    ids = load_tensors(art / "tokens" / "train.safetensors")["input_ids"]
    cfg = replace(DashboardConfig(), max_tokens=args.tokens)
    n = min(args.tokens, cache.n_tokens("train"))

    # warm both paths up on a few tokens first (thread pools, allocator, tokenizer), so neither pays
    # first-call costs inside its timing
    build_dashboards(sae, model, tok, cache, ids, DOMAINS, replace(cfg, max_tokens=8192))
    baseline(sae, cache, 8192, args.batch, cfg)

    t0 = time.perf_counter()
    arrays, rows, info = build_dashboards(sae, model, tok, cache, ids, DOMAINS, cfg)
    one = time.perf_counter() - t0
    base, base_v, base_i = baseline(sae, cache, n, args.batch, cfg)
    # identical top-k: same activation values, and the same tokens wherever values are not tied
    # (the first position of every sequence is the same BOS token, so exact ties are common)
    meta = cache.load("train", max_tokens=n, fields=["seq", "pos"])
    ours_v = arrays["ex_values"][:, : cfg.top_k]
    full = base_v[:, -1] > 0  # features that fired >= k times
    same_values = torch.allclose(ours_v[full], base_v[full], atol=1e-5)
    mismatched = 0
    for f in torch.nonzero(full).flatten().tolist():
        v = base_v[f]
        distinct = torch.cat([v[:-1] != v[1:], torch.tensor([True])]) & torch.cat(
            [torch.tensor([True]), v[1:] != v[:-1]]
        )
        distinct &= v > v[-1]  # a value tied with the k-th may lose its place to an equal one outside
        want = {(int(meta["seq"][r]), int(meta["pos"][r])) for r, d in zip(base_i[f].tolist(), distinct.tolist()) if d}
        got = {
            (int(a), int(b))
            for a, b in zip(arrays["ex_seq"][f, : cfg.top_k].tolist(), arrays["ex_pos"][f, : cfg.top_k].tolist())
        }
        mismatched += not want <= got
    out = {
        "sae": args.sae,
        "hook": hook,
        "d_sae": int(sae.cfg.d_sae),
        "tokens": n,
        "feature_batch": args.batch,
        "passes_baseline": -(-int(sae.cfg.d_sae) // args.batch),
        "one_pass_s": round(one, 2),
        "baseline_s": round(base, 2),
        "speedup": round(base / one, 2),
        "nonzero_codes": info["nonzero"],
        "features_compared": int(full.sum()),
        "top_k_values_identical": bool(same_values),
        "features_with_different_top_k_tokens": mismatched,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
