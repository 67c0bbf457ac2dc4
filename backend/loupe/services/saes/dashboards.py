"""Feature dashboards for an SAE: computed in one streaming pass over a hook's activation cache,
stored as database rows (one per feature: the summary a list or a search needs) plus one array
file (histograms, example windows with per-token activations, interval shares).

    dashboards/<sae_id>/features.safetensors   arrays below, manifest.json (key, config, timings)
    dashboards/<sae_id>/pages.bin               each feature's page but its labels (numbers, summary,
                                                examples, interval samples, histogram) as JSON, rendered
                                                once (zlib; offsets in page_offsets, neighbours beside)
    sae_features table                          density, max/mean activation, capacity, auto label,
                                                top domain, summary JSON (tokens, domains, logits,
                                                neighbours, neurons)
    feature_labels table                        people's labels (kept when dashboards are rebuilt)

Rows are swapped in one transaction before the array directory is renamed into place; the step
counts as done only when the manifest exists, so a crash in between redoes both.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from loupe.core import sae_dashboards as D
from loupe.core.activations import hook_layer
from loupe.jobs.runner import Progress, no_progress
from loupe.services.activations import ActivationCache
from loupe.services.saes.configs import DashboardConfig
from loupe.services.saes.pages import PAGES_FILE, gc_paused, rounded_list, write_pages
from loupe.storage.artifacts import atomic_dir, save_tensors, write_manifest

DASHBOARDS_VERSION = "dashboards-v4"  # in every dashboard key (demo and registered SAEs): bump to re-render


def hook_site(hook_name: str) -> tuple[int | None, str]:
    """(block index, the name inside the block): `blocks.0.mlp.hook_post` -> (0, "mlp.hook_post")."""
    layer = hook_layer(hook_name)
    return (layer, hook_name.split(".", 2)[2]) if layer is not None else (None, hook_name)


def residual_directions(W_dec: Tensor, hook_name: str, model) -> Tensor | None:
    """Each feature's decoder direction as written to the residual stream (None where the hook is
    not in or directly into the residual stream)."""
    layer, site = hook_site(hook_name)
    if site in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post") or hook_name == "hook_embed":
        return W_dec
    if layer is not None and site in ("mlp.hook_post",):
        return W_dec @ model.W_out[layer].detach().float()
    if layer is not None and site in ("hook_mlp_out", "hook_attn_out"):
        return W_dec
    return None


def neuron_loads(sae, hook_name: str, model) -> dict[str, Any] | None:
    """How features connect to MLP neurons: (reads [d_sae, n], writes [d_sae, n], the layer and what
    the units are). MLP-neuron SAEs read and write neurons directly; residual SAEs read from the
    previous layer's neurons (W_out . W_enc) and write to the same layer's MLP neurons (W_dec . W_in),
    the direct path ignoring LayerNorm."""
    layer, site = hook_site(hook_name)
    W_enc = sae.W_enc.detach().float()  # [d_in, d_sae]
    W_dec = sae.W_dec.detach().float()  # [d_sae, d_in]
    if layer is not None and site == "mlp.hook_post":
        return {"reads": W_enc.T, "writes": W_dec, "units": f"blocks.{layer}.mlp.hook_post", "layer": layer}
    if layer is not None and site in ("hook_resid_pre", "hook_resid_mid"):
        n_layers = int(model.cfg.n_layers)
        writes = W_dec @ model.W_in[layer].detach().float() if layer < n_layers else None
        reads = (model.W_out[layer - 1].detach().float() @ W_enc).T if layer > 0 else None
        return {
            "reads": reads,
            "writes": writes,
            "units": f"blocks.{layer}.mlp neurons (writes) / blocks.{layer - 1}.mlp neurons (reads)",
            "layer": layer,
        }
    return None


def _pair_lists(idx: Tensor, vals: Tensor, digits: int = 4) -> list[list[list[float]]]:
    """Per row of idx/vals [n, k]: [[index, value rounded], ...]."""
    return [[[i, v] for i, v in zip(ir, vr)] for ir, vr in zip(idx.tolist(), rounded_list(vals, digits))]


@contextmanager
def sparse_topk(sae):
    """While inside, a TopK SAE's encode returns sae-lens's sparse COO codes (its TopK activation
    with use_sparse_activations) instead of scattering k values per token into a dense
    [tokens, d_sae] matrix that would then be scanned for its nonzeros; other SAEs are untouched."""
    from sae_lens.saes.topk_sae import TopK

    act = getattr(sae, "activation_fn", None)
    switch = isinstance(act, TopK) and not act.use_sparse_activations
    if switch:
        act.use_sparse_activations = True
    try:
        # sae-lens builds the COO codes from topk's own indices, valid by construction: opt out of
        # the invariant checks explicitly (torch warns when they are off implicitly)
        with torch.sparse.check_sparse_tensor_invariants(enable=False):
            yield
    finally:
        if switch:
            act.use_sparse_activations = False


def nonzero_codes(c: Tensor) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """Dense codes as they are; sparse [b, d_sae] codes as (rows, features, values > 0) on the CPU."""
    if not c.is_sparse:
        return c.cpu()
    idx, v = c._indices().cpu(), c._values().cpu()  # uncoalesced: TopK writes each (row, feature) once
    keep = v > 0
    return idx[0][keep], idx[1][keep], v[keep]


@torch.no_grad()
def build_dashboards(
    sae,
    model,
    tokenizer,
    cache: ActivationCache,
    input_ids: Tensor,  # the cache's train split token file: [n_seq, n_ctx]
    domain_names: Sequence[str],
    cfg: DashboardConfig = DashboardConfig(),
    progress: Progress = no_progress,
) -> tuple[dict[str, Tensor], list[dict[str, Any]], dict[str, Any]]:
    """(arrays, feature rows, SAE-level stats) for every feature of `sae` at the cache's hook."""
    t0 = time.monotonic()
    d_sae = int(sae.cfg.d_sae)
    n_total = min(cache.n_tokens("train"), cfg.max_tokens)
    meta_parts: dict[str, list[Tensor]] = {k: [] for k in ("seq", "pos", "domain", "token")}

    def batches():
        n = 0
        for shard in cache.iter_shards("train"):
            take = min(shard["acts"].shape[0], n_total - n)
            if take <= 0:
                return
            for k in meta_parts:
                meta_parts[k].append(shard[k][:take])
            for s in range(0, take, cfg.batch_size):
                yield shard["acts"][s : min(s + cfg.batch_size, take)].float()
            n += take

    with sparse_topk(sae):
        codes = D.encode_sparse(
            lambda x: nonzero_codes(sae.encode(x.to(sae.device))),
            batches(),
            d_sae,
            progress=lambda n: progress(n, n_total, f"encoding {n:,}/{n_total:,} tokens"),
        )
    meta = {k: torch.cat(v) for k, v in meta_parts.items()}
    progress(n_total, n_total, f"statistics over {codes.values.numel():,} nonzero codes")

    stats = D.feature_stats(codes)
    mx = stats["max"]
    hist = D.histograms(codes, mx, cfg.hist_bins)
    top_rows, _ = D.top_k(codes, cfg.top_k)
    g = torch.Generator().manual_seed(cfg.seed)
    iv_rows, iv_shares = D.interval_samples(codes, mx, cfg.n_intervals, cfg.per_interval, g)
    ex_rows = torch.cat([top_rows, iv_rows.flatten(1)], dim=1)  # [d_sae, E]

    n_seq, n_ctx = int(meta["seq"].max()) + 1 if meta["seq"].numel() else 0, input_ids.shape[1]
    row_index = torch.full((n_seq, n_ctx), -1, dtype=torch.long)
    row_index[meta["seq"].long(), meta["pos"].long()] = torch.arange(meta["seq"].numel())
    win_tokens, win_rows = D.context_windows(
        ex_rows, meta["seq"], meta["pos"], row_index, input_ids[:n_seq], cfg.left, cfg.right
    )
    feat_idx = torch.arange(d_sae)[:, None, None].expand_as(win_rows)
    win_acts = D.lookup(codes, feat_idx, win_rows)
    ex_values = D.lookup(codes, torch.arange(d_sae)[:, None].expand_as(ex_rows), ex_rows)
    valid = ex_rows >= 0
    ex_seq = torch.where(valid, meta["seq"][ex_rows.clamp(min=0)].long(), -1)
    ex_pos = torch.where(valid, meta["pos"][ex_rows.clamp(min=0)].long(), -1)

    progress(n_total, n_total, "enrichment, logits, neighbours, capacity")
    vocab = int(max(int(meta["token"].max()) + 1 if meta["token"].numel() else 1, len(tokenizer)))
    tok_ids, tok_p, tok_lift = D.enrichment(codes, meta["token"], vocab, cfg.n_tokens)
    n_dom = len(domain_names)
    dom_share = D.label_shares(codes, meta["domain"], n_dom)
    dom_base = torch.bincount(meta["domain"].long(), minlength=n_dom).float() / max(meta["domain"].numel(), 1)

    W_dec = sae.W_dec.detach().float().cpu()
    cap = D.capacity(W_dec)
    nb_idx, nb_cos = D.nearest_by_cosine(W_dec, cfg.n_neighbours)
    resid = residual_directions(W_dec, cache.hook_name, model)
    logits = None
    if resid is not None:
        logits = D.top_bottom(resid @ model.W_U.detach().float().cpu(), cfg.n_logits)
    loads = neuron_loads(sae, cache.hook_name, model)
    neuron_stats: dict[str, Any] = {}
    reads = writes = None
    if loads is not None:
        if loads["writes"] is not None:
            writes = D.top_bottom(loads["writes"], cfg.n_neurons)
            live = stats["count"] > 0
            unit = torch.nn.functional.normalize(loads["writes"][live], dim=1)
            neuron_stats = {
                "units": loads["units"],
                "layer": loads["layer"],
                "polysemanticity": D.participation_ratio(unit),
            }
        if loads["reads"] is not None:
            reads = D.top_bottom(loads["reads"], cfg.n_neurons)

    decoded: dict[int, str] = {}  # ~27k lookups over a few thousand distinct ids

    def token_str(i: int) -> str:
        if i < 0:
            return ""
        if i not in decoded:
            decoded[i] = tokenizer.decode([i])
        return decoded[i]

    # ~100k small dicts, lists and floats below, none in a cycle: with the cyclic GC on, this part of a
    # 1,024-feature pass took 0.07-0.46 s (it rescans them over and over), with it paused 0.07-0.1 s
    with gc_paused():
        # everything the loop reads, as Python lists made once
        tok_l, tok_p_l, tok_lift_l = tok_ids.tolist(), rounded_list(tok_p, 4), rounded_list(tok_lift, 2)
        dom_order = torch.argsort(dom_share, dim=1, descending=True)[:, :3]
        dom_sh = dom_share.gather(1, dom_order)
        dom_order_l, dom_sh_l = dom_order.tolist(), dom_sh.tolist()
        dom_sh_r, dom_lift_r = rounded_list(dom_sh, 4), rounded_list(dom_sh / dom_base.clamp(min=1e-9)[dom_order], 2)
        neighbours = _pair_lists(nb_idx, nb_cos)
        logit_lists = None
        if logits is not None:
            logit_lists = [
                (i.tolist(), rounded_list(v, 4)) for i, v in ((logits[0], logits[1]), (logits[2], logits[3]))
            ]
        neuron_lists = {
            name: (_pair_lists(tb[0], tb[1]), _pair_lists(tb[2], tb[3]))
            for name, tb in (("neurons_writes", writes), ("neurons_reads", reads))
            if tb is not None
        }
        density_l, mx_l, mean_l, cap_l = (stats["density"].tolist(), mx.tolist(), stats["mean"].tolist(), cap.tolist())
        dead = stats["count"] == 0
        dead_l = dead.tolist()

        rows: list[dict[str, Any]] = []
        for f in range(d_sae):
            toks = [
                {"id": t, "token": token_str(t), "share": p, "lift": l}
                for t, p, l in zip(tok_l[f], tok_p_l[f], tok_lift_l[f])
                if t >= 0
            ]
            doms = [
                {"name": domain_names[d], "share": sh, "lift": li}
                for d, raw, sh, li in zip(dom_order_l[f], dom_sh_l[f], dom_sh_r[f], dom_lift_r[f])
                if raw > 0
            ]
            top_dom = doms[0] if doms else None
            summary: dict[str, Any] = {"tokens": toks, "domains": doms, "neighbours": neighbours[f]}
            if logit_lists is not None:
                summary["logits"] = {
                    side: [[i, token_str(i), v] for i, v in zip(ids_[f], vals_[f])]
                    for side, (ids_, vals_) in zip(("top", "bottom"), logit_lists)
                }
            for name, (top, bottom) in neuron_lists.items():
                summary[name] = {"top": top[f], "bottom": bottom[f]}
            rows.append(
                {
                    "index": f,
                    "density": density_l[f],
                    "max_activation": mx_l[f],
                    "mean_activation": mean_l[f],
                    "capacity": cap_l[f],
                    "auto_label": "dead" if dead_l[f] else auto_label(toks, top_dom),
                    "top_domain": top_dom["name"] if top_dom else None,
                    "top_domain_share": top_dom["share"] if top_dom else None,
                    "summary": summary,
                }
            )

    arrays = {
        "hist": hist.int(),
        "max": mx.float(),
        "interval_shares": iv_shares.float(),
        "ex_values": ex_values.float(),
        "ex_seq": ex_seq.int(),
        "ex_pos": ex_pos.int(),
        "ex_tokens": win_tokens.int(),
        "ex_acts": win_acts.half(),
        "neighbours": nb_idx.int(),  # the summary's neighbours, for a page request's label query
    }
    if neuron_stats:
        arrays["neuron_polysemanticity"] = neuron_stats["polysemanticity"].float()
    info = {
        "tokens": int(codes.n_rows),
        "nonzero": int(codes.values.numel()),
        "dead": int(dead.sum()),
        "seconds": round(time.monotonic() - t0, 1),
        "neurons": {k: v for k, v in neuron_stats.items() if k != "polysemanticity"},
    }
    return arrays, rows, info


def auto_label(tokens: list[dict[str, Any]], top_domain: dict[str, Any] | None) -> str:
    """A label from the most enriched tokens, prefixed by a domain that holds most of the
    feature's activation mass and is over-represented, or a large share of it and is strongly
    over-represented (a context feature: weak activations elsewhere dilute its share; no language
    model involved)."""
    words = []
    for t in tokens[:3]:
        s = t["token"].replace("\n", "\\n")
        words.append(repr(s) if s.strip() != s or not s else s)
    label = " ".join(words) if words else "(no enriched tokens)"
    if top_domain and (
        (top_domain["share"] >= 0.5 and top_domain["lift"] >= 2)
        or (top_domain["share"] >= 0.3 and top_domain["lift"] >= 10)
    ):
        return f"{top_domain['name']}: {label}"
    return label


def write_dashboards(
    ws,
    sae_id: str,
    output: Path,
    arrays: dict[str, Tensor],
    rows: list[dict[str, Any]],
    manifest: dict[str, Any],
    cfg: DashboardConfig,
    vocab: Sequence[str],
) -> None:
    """Rows first (one transaction), then the arrays directory (arrays, rendered pages) renamed into
    place with its manifest."""
    ws.saes.replace_features(sae_id, rows)
    with atomic_dir(Path(output)) as tmp:
        t0 = time.monotonic()
        offsets = write_pages(
            tmp / PAGES_FILE,
            arrays,
            rows,
            cfg,
            vocab,
            {"sae_id": sae_id, "hook_name": manifest["hook_name"], "d_sae": len(rows)},
        )
        save_tensors(tmp / "features.safetensors", {**arrays, "page_offsets": offsets})
        write_manifest(tmp, {**manifest, "pages": True, "pages_seconds": round(time.monotonic() - t0, 1)})


def vocab_strings(tokenizer) -> list[str]:
    """Every token id's text, decoded once (pages show ~1,000 tokens each)."""
    return [tokenizer.decode([i]) for i in range(len(tokenizer))]


def compute_dashboards(
    ws,
    sae_id: str,
    sae,
    model,
    tokenizer,
    cache: ActivationCache,
    input_ids: Tensor,
    domain_names: Sequence[str],
    cfg: DashboardConfig,
    output: Path,
    key: str,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Dashboards of one SAE: one pass over `cache`, rows into the database, arrays into `output`."""
    if cache.hook_name != sae.cfg.metadata.hook_name:
        raise ValueError(f"the cache holds {cache.hook_name}, the SAE reads {sae.cfg.metadata.hook_name}")
    arrays, rows, info = build_dashboards(sae, model, tokenizer, cache, input_ids, domain_names, cfg, progress)
    write_dashboards(
        ws,
        sae_id,
        output,
        arrays,
        rows,
        {"key": key, "sae_id": sae_id, "hook_name": cache.hook_name, "config": cfg.to_dict(), **info},
        cfg,
        vocab_strings(tokenizer),
    )
    ws.saes.update(sae_id, dashboards={"dir": str(output), "key": key, **info})
    return info
