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

One commit point: the array directory is renamed into place first (its manifest carries the build's
key), then one transaction swaps the rows and stores that key on the SAE's row. Pages are served, and
the build step counts as done, only when the row's key and the manifest's agree, so a kill anywhere
before that transaction leaves the dashboards "failed" (its job interrupted) and a retry redoes both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from loupe.core import sae_dashboards as D
from loupe.core.config import Progress, no_progress
from loupe.faults import crash_point
from loupe.jobs.fanout import LOCAL, Units
from loupe.services.activations import ActivationCache
from loupe.services.saes.configs import DashboardConfig
from loupe.services.saes.effects import TopBottom, logit_effects, neuron_effects
from loupe.services.saes.encode import encode_pass
from loupe.services.saes.pages import PAGES_FILE, gc_paused, rounded_list, write_pages
from loupe.storage.artifacts import atomic_dir, save_tensors, write_manifest

if TYPE_CHECKING:
    from loupe.services.workspace import Workspace

DASHBOARDS_VERSION = "dashboards-v4"  # in every dashboard key (demo and registered SAEs): bump to re-render


def _pair_lists(idx: Tensor, vals: Tensor, digits: int = 4) -> list[list[list[float]]]:
    """Per row of idx/vals [n, k]: [[index, value rounded], ...]."""
    return [[[i, v] for i, v in zip(ir, vr)] for ir, vr in zip(idx.tolist(), rounded_list(vals, digits))]


@dataclass
class _FeatureTables:
    """Every per-feature table the dashboard rows summarise (first dimension d_sae)."""

    stats: dict[str, Tensor]  # D.feature_stats: count, density, max, mean
    tokens: tuple[Tensor, Tensor, Tensor]  # D.enrichment: token ids, shares, lifts
    domain_share: Tensor  # [d_sae, n_domains]
    domain_base: Tensor  # [n_domains]: each domain's share of all tokens
    capacity: Tensor
    neighbours: tuple[Tensor, Tensor]  # D.nearest_by_cosine: indices, cosines
    logits: TopBottom | None  # None where the hook does not write to the residual stream
    neurons: dict[str, TopBottom]  # "neurons_writes", "neurons_reads": where the hook has them
    neuron_stats: dict[str, Any]  # units, layer, polysemanticity; {} where features write no neurons


@torch.no_grad()
def build_dashboards(
    sae: Any,  # a sae-lens SAE
    model: Any,  # a TransformerBridge
    tokenizer: Any,  # a transformers tokenizer
    cache: ActivationCache,
    input_ids: Tensor,  # the cache's train split token file: [n_seq, n_ctx]
    domain_names: Sequence[str],
    cfg: DashboardConfig = DashboardConfig(),
    progress: Progress = no_progress,
    units: Units = LOCAL,
    sae_dir: Path | None = None,
) -> tuple[dict[str, Tensor], list[dict[str, Any]], dict[str, Any]]:
    """(arrays, feature rows, SAE-level stats) for every feature of `sae` at the cache's hook; the
    encoding pass runs as `units` (on Ray actors, which load the SAE from `sae_dir`)."""
    t0 = time.monotonic()
    n_total = min(cache.n_tokens("train"), cfg.max_tokens)
    codes, meta, top_rows = encode_pass(sae, cache, n_total, cfg.batch_size, progress, cfg.top_k, units, sae_dir)
    progress(n_total, n_total, f"statistics over {codes.values.numel():,} nonzero codes")

    stats = D.feature_stats(codes)
    hist = D.histograms(codes, stats["max"], cfg.hist_bins)
    examples = _example_arrays(codes, top_rows, stats["max"], meta, input_ids, cfg)

    progress(n_total, n_total, "enrichment, logits, neighbours, capacity")
    tables = _feature_tables(sae, model, len(tokenizer), cache.hook_name, codes, stats, meta, len(domain_names), cfg)
    rows = _feature_rows(tables, domain_names, _token_namer(tokenizer))

    arrays = {
        "hist": hist.int(),
        "max": stats["max"].float(),
        **examples,
        "neighbours": tables.neighbours[0].int(),  # the summary's neighbours, for a page request's label query
    }
    if tables.neuron_stats:
        arrays["neuron_polysemanticity"] = tables.neuron_stats["polysemanticity"].float()
    info = {
        "tokens": int(codes.n_rows),
        "nonzero": int(codes.values.numel()),
        "dead": int((stats["count"] == 0).sum()),
        "seconds": round(time.monotonic() - t0, 1),
        "neurons": {k: v for k, v in tables.neuron_stats.items() if k != "polysemanticity"},
    }
    return arrays, rows, info


def _example_arrays(
    codes: D.SparseCodes,
    top_rows: Tensor,
    max_act: Tensor,
    meta: dict[str, Tensor],
    input_ids: Tensor,
    cfg: DashboardConfig,
) -> dict[str, Tensor]:
    """Each feature's examples (its top-k tokens, then `per_interval` random tokens of each activation
    interval) as stored arrays: activation, sequence, position, the context window's tokens and
    activations; and the intervals' shares of the feature's activations."""
    d_sae = codes.d_sae
    g = torch.Generator().manual_seed(cfg.seed)
    iv_rows, iv_shares = D.interval_samples(codes, max_act, cfg.n_intervals, cfg.per_interval, g)
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
    return {
        "interval_shares": iv_shares.float(),
        "ex_values": ex_values.float(),
        "ex_seq": ex_seq.int(),
        "ex_pos": ex_pos.int(),
        "ex_tokens": win_tokens.int(),
        "ex_acts": win_acts.half(),
    }


def _feature_tables(
    sae: Any,
    model: Any,
    n_vocab: int,
    hook_name: str,
    codes: D.SparseCodes,
    stats: dict[str, Tensor],
    meta: dict[str, Tensor],
    n_domains: int,
    cfg: DashboardConfig,
) -> _FeatureTables:
    """Token and domain enrichment from the codes; capacity, neighbours, logit and neuron effects
    from the SAE's weights."""
    vocab = int(max(int(meta["token"].max()) + 1 if meta["token"].numel() else 1, n_vocab))
    tokens = D.enrichment(codes, meta["token"], vocab, cfg.n_tokens)
    domain_share = D.label_shares(codes, meta["domain"], n_domains)
    domain_base = torch.bincount(meta["domain"].long(), minlength=n_domains).float() / max(meta["domain"].numel(), 1)

    W_dec = sae.W_dec.detach().float().cpu()
    capacity = D.capacity(W_dec)
    neighbours = D.nearest_by_cosine(W_dec, cfg.n_neighbours)
    logits = logit_effects(W_dec, hook_name, model, cfg.n_logits)
    neurons, neuron_stats = neuron_effects(sae, hook_name, model, stats["count"] > 0, cfg.n_neurons)
    return _FeatureTables(
        stats=stats,
        tokens=tokens,
        domain_share=domain_share,
        domain_base=domain_base,
        capacity=capacity,
        neighbours=neighbours,
        logits=logits,
        neurons=neurons,
        neuron_stats=neuron_stats,
    )


def _token_namer(tokenizer: Any) -> Callable[[int], str]:
    """A token id's text ("" for -1, the padding), decoded once per id: the rows make ~27k lookups
    over a few thousand distinct ids."""
    decoded: dict[int, str] = {}

    def token_str(i: int) -> str:
        if i < 0:
            return ""
        if i not in decoded:
            decoded[i] = tokenizer.decode([i])
        return decoded[i]

    return token_str


def _feature_rows(
    tables: _FeatureTables, domain_names: Sequence[str], token_str: Callable[[int], str]
) -> list[dict[str, Any]]:
    """One database row per feature: its numbers, automatic label, top domain and summary (enriched
    tokens, domains, neighbours, logits, neurons)."""
    stats = tables.stats
    # ~100k small dicts, lists and floats below, none in a cycle: with the cyclic GC on, this part of a
    # 1,024-feature pass took 0.07-0.46 s (it rescans them over and over), with it paused 0.07-0.1 s
    with gc_paused():
        # everything the loop reads, as Python lists made once
        tok_ids, tok_p, tok_lift = tables.tokens
        tok_l, tok_p_l, tok_lift_l = tok_ids.tolist(), rounded_list(tok_p, 4), rounded_list(tok_lift, 2)
        dom_order = torch.argsort(tables.domain_share, dim=1, descending=True)[:, :3]
        dom_sh = tables.domain_share.gather(1, dom_order)
        dom_order_l, dom_sh_l = dom_order.tolist(), dom_sh.tolist()
        dom_sh_r = rounded_list(dom_sh, 4)
        dom_lift_r = rounded_list(dom_sh / tables.domain_base.clamp(min=1e-9)[dom_order], 2)
        neighbours = _pair_lists(*tables.neighbours)
        logit_lists = None
        if tables.logits is not None:
            logits = tables.logits
            logit_lists = [
                (i.tolist(), rounded_list(v, 4)) for i, v in ((logits[0], logits[1]), (logits[2], logits[3]))
            ]
        neuron_lists = {
            name: (_pair_lists(tb[0], tb[1]), _pair_lists(tb[2], tb[3])) for name, tb in tables.neurons.items()
        }
        density_l, mx_l, mean_l, cap_l = (
            stats["density"].tolist(),
            stats["max"].tolist(),
            stats["mean"].tolist(),
            tables.capacity.tolist(),
        )
        dead_l = (stats["count"] == 0).tolist()

        rows: list[dict[str, Any]] = []
        for f in range(len(density_l)):
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
    return rows


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
    ws: Workspace,
    sae_id: str,
    output: Path,
    arrays: dict[str, Tensor],
    rows: list[dict[str, Any]],
    manifest: dict[str, Any],
    cfg: DashboardConfig,
    vocab: Sequence[str],
    info: dict[str, Any] | None = None,
) -> None:
    """The arrays directory (arrays, rendered pages) renamed into place with its manifest, then the
    commit: the rows and the row's dashboards key in one transaction (see the module docstring)."""
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
    crash_point(f"dashboards.commit:{sae_id}")
    ws.saes.commit_dashboards(sae_id, rows, {"dir": str(output), "key": manifest["key"], **(info or {})})


def vocab_strings(tokenizer: Any) -> list[str]:
    """Every token id's text, decoded once (pages show ~1,000 tokens each)."""
    return [tokenizer.decode([i]) for i in range(len(tokenizer))]


def compute_dashboards(
    ws: Workspace,
    sae_id: str,
    sae: Any,  # a sae-lens SAE
    model: Any,  # a TransformerBridge
    tokenizer: Any,  # a transformers tokenizer
    cache: ActivationCache,
    input_ids: Tensor,
    domain_names: Sequence[str],
    cfg: DashboardConfig,
    output: Path,
    key: str,
    progress: Progress = no_progress,
    units: Units = LOCAL,
    sae_dir: Path | None = None,
) -> dict[str, Any]:
    """Dashboards of one SAE: one pass over `cache`, rows into the database, arrays into `output`."""
    if cache.hook_name != sae.cfg.metadata.hook_name:
        raise ValueError(f"the cache holds {cache.hook_name}, the SAE reads {sae.cfg.metadata.hook_name}")
    arrays, rows, info = build_dashboards(
        sae, model, tokenizer, cache, input_ids, domain_names, cfg, progress, units, sae_dir
    )
    write_dashboards(
        ws,
        sae_id,
        output,
        arrays,
        rows,
        {"key": key, "sae_id": sae_id, "hook_name": cache.hook_name, "config": cfg.to_dict(), **info},
        cfg,
        vocab_strings(tokenizer),
        info,
    )
    return info
