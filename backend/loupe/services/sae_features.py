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

import gc
import time
import zlib
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import orjson
import torch
from safetensors import safe_open
from torch import Tensor

from loupe.core import sae_dashboards as D
from loupe.core.activations import hook_layer
from loupe.services.activations import ActivationCache
from loupe.storage.artifacts import atomic_dir, save_tensors, write_manifest

Progress = Callable[[float, float | None, str], None]


@dataclass(frozen=True)
class DashboardConfig:
    max_tokens: int = 300_000  # train-split tokens passed through the SAE
    top_k: int = 20  # top activating examples per feature
    n_intervals: int = 10  # interval samples: equal bins of (0, max activation]
    per_interval: int = 2  # examples drawn per bin
    hist_bins: int = 40
    left: int = 16  # context window: tokens before and after the example token
    right: int = 6
    n_logits: int = 10
    n_neighbours: int = 10
    n_neurons: int = 8
    n_tokens: int = 8  # enriched tokens kept per feature
    batch_size: int = 4096
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DashboardConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def n_examples(self) -> int:
        return self.top_k + self.n_intervals * self.per_interval


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


def rounded_list(t: Tensor, digits: int) -> list:
    """t rounded to `digits` decimals as (nested) Python floats, in one conversion: per-element
    .tolist() and round() cost a quarter of a 1,024-feature dashboard pass and most of a feature page."""
    scale = 10.0**digits
    return (t.double() * scale).round().div(scale).tolist()


def _pair_lists(idx: Tensor, vals: Tensor, digits: int = 4) -> list[list[list[float]]]:
    """Per row of idx/vals [n, k]: [[index, value rounded], ...]."""
    return [[[i, v] for i, v in zip(ir, vr)] for ir, vr in zip(idx.tolist(), rounded_list(vals, digits))]


@contextmanager
def _gc_paused():
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


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
    progress: Progress | None = None,
) -> tuple[dict[str, Tensor], list[dict[str, Any]], dict[str, Any]]:
    """(arrays, feature rows, SAE-level stats) for every feature of `sae` at the cache's hook."""
    progress = progress or (lambda d, t, m: None)
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
    with _gc_paused():
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


# -- feature pages --------------------------------------------------------------------------------
#
# A feature page is static after the build except for labels (the person's label of the feature and
# the labels shown beside its neighbours), so the build renders the rest to JSON once per feature:
# the row's numbers and summary, the examples (about a thousand tokens with activations), interval
# samples and histogram. A request reads one slice and splices the labels, read now, before it.
# Rendering per request (2-3 ms) and two ORM reads of the row were most of a request's time.

PAGES_FILE = "pages.bin"
PAGE_ARRAYS = ("hist", "interval_shares", "ex_values", "ex_seq", "ex_pos", "ex_tokens", "ex_acts")
ROW_FIELDS = (
    "index",
    "density",
    "max_activation",
    "mean_activation",
    "capacity",
    "auto_label",
    "top_domain",
    "top_domain_share",
)


def vocab_strings(tokenizer) -> list[str]:
    """Every token id's text, decoded once (pages show ~1,000 tokens each)."""
    return [tokenizer.decode([i]) for i in range(len(tokenizer))]


def histogram_figure(counts: list[int], max_act: float, density: float) -> dict[str, Any]:
    """Plotly figure JSON: the feature's nonzero activations over equal bins of (0, max]."""
    n = len(counts)
    width = max_act / n if n else 0.0
    centers = [(i + 0.5) * width for i in range(n)]
    return {
        "data": [
            {
                "type": "bar",
                "x": centers,
                "y": counts,
                "width": [width] * n,
                "marker": {"color": "#4f6bed"},
                "hovertemplate": "activation %{x:.3f}<br>%{y} tokens<extra></extra>",
            }
        ],
        "layout": {
            "title": {"text": f"Activation density {density:.3%}", "font": {"size": 12}},
            "xaxis": {"title": {"text": "activation"}},
            "yaxis": {"title": {"text": "tokens"}},
            "bargap": 0.05,
            "showlegend": False,
        },
    }


def _page(
    row: dict[str, Any],
    sae: dict[str, Any],
    seq_l: list,
    pos_l: list,
    ids_l: list,
    acts_l: list,
    val_l: list,
    shares_l: list,
    counts: list,
    cfg: DashboardConfig,
    vocab: Sequence[str],
) -> bytes:
    """One feature's page without labels: `sae` (sae_id, hook_name, d_sae), the row's ROW_FIELDS and
    summary, examples, interval samples and histogram (arrays as Python lists)."""
    n_vocab = len(vocab)

    def example(e: int) -> dict[str, Any] | None:
        if seq_l[e] < 0:
            return None
        ids = ids_l[e]
        toks = [
            {"token": vocab[t] if t < n_vocab else "", "id": t, "activation": a}
            for t, a in zip(ids, acts_l[e])
            if t >= 0
        ]
        first = next(i for i, t in enumerate(ids) if t >= 0)
        return {"seq": seq_l[e], "pos": pos_l[e], "activation": val_l[e], "center": cfg.left - first, "tokens": toks}

    mx, density = row["max_activation"], row["density"]
    top_k, n_iv, per = cfg.top_k, cfg.n_intervals, cfg.per_interval
    top = [x for x in (example(e) for e in range(top_k)) if x is not None]
    intervals = []
    width = mx / n_iv if n_iv else 0.0
    for b in range(n_iv - 1, -1, -1):  # highest bin first, as Neuronpedia
        exs = [x for x in (example(top_k + b * per + j) for j in range(per)) if x is not None]
        intervals.append(
            {
                "bin": b,
                "low": round(b * width, 4),
                "high": round((b + 1) * width, 4),
                "share": shares_l[b],
                "examples": exs,
            }
        )
    return orjson.dumps(
        {
            **{k: row[k] for k in ROW_FIELDS},
            **sae,
            "summary": row["summary"],
            "top_examples": top,
            "intervals": intervals,
            "histogram": {"counts": counts, "max": mx, "figure": histogram_figure(counts, mx, density)},
        }
    )


def render_page(
    row: dict[str, Any], sae: dict[str, Any], arr: dict[str, Tensor], cfg: DashboardConfig, vocab: Sequence[str]
) -> bytes:
    """`_page` of one feature from its slices of the PAGE_ARRAYS."""
    return _page(
        row,
        sae,
        arr["ex_seq"].tolist(),
        arr["ex_pos"].tolist(),
        arr["ex_tokens"].tolist(),
        rounded_list(arr["ex_acts"], 4),
        rounded_list(arr["ex_values"], 4),
        rounded_list(arr["interval_shares"], 4),
        arr["hist"].tolist(),
        cfg,
        vocab,
    )


def write_pages(
    path: Path,
    arrays: dict[str, Tensor],
    rows: list[dict[str, Any]],
    cfg: DashboardConfig,
    vocab: Sequence[str],
    sae: dict[str, Any],
) -> Tensor:
    """Every feature's page, zlib-compressed, concatenated into `path`; returns the byte offsets [d_sae + 1]."""
    lists = {k: arrays[k].tolist() for k in ("ex_seq", "ex_pos", "ex_tokens", "hist")}
    acts, vals, shares = (rounded_list(arrays[k], 4) for k in ("ex_acts", "ex_values", "interval_shares"))
    offsets = [0]
    with open(path, "wb") as fh, _gc_paused():
        for f, row in enumerate(rows):
            blob = zlib.compress(
                _page(
                    row,
                    sae,
                    lists["ex_seq"][f],
                    lists["ex_pos"][f],
                    lists["ex_tokens"][f],
                    acts[f],
                    vals[f],
                    shares[f],
                    lists["hist"][f],
                    cfg,
                    vocab,
                ),
                3,
            )
            fh.write(blob)
            offsets.append(offsets[-1] + len(blob))
    return torch.tensor(offsets, dtype=torch.int64)


def read_page(dashboard_dir: Path, index: int) -> tuple[bytes, list[int]]:
    """A stored page and the feature's neighbour indices."""
    with safe_open(str(dashboard_dir / "features.safetensors"), "pt") as fh:
        lo, hi = fh.get_slice("page_offsets")[index : index + 2].tolist()
        neighbours = [i for i in fh.get_slice("neighbours")[index].tolist() if i >= 0]
    with open(dashboard_dir / PAGES_FILE, "rb") as fh:
        fh.seek(lo)
        return zlib.decompress(fh.read(hi - lo)), neighbours


def splice_json(head: bytes, tail: bytes) -> bytes:
    """Two serialised JSON objects merged into one (their keys must not overlap)."""
    if head == b"{}":
        return tail
    return head[:-1] + (b"," + tail[1:] if tail != b"{}" else b"}")
