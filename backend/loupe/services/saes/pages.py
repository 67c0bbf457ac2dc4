"""Feature pages: each feature's dashboard but its labels (numbers, summary, examples, interval
samples, histogram) rendered to JSON once by the dashboard build, stored zlib-compressed in one file
(`pages.bin`, offsets beside it); a request reads one slice and splices the labels in."""

from __future__ import annotations

import gc
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import torch
from safetensors import safe_open
from torch import Tensor

from loupe.services.saes.configs import DashboardConfig

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


def rounded_list(t: Tensor, digits: int) -> list[Any]:
    """t rounded to `digits` decimals as (nested) Python floats, in one conversion: per-element
    .tolist() and round() cost a quarter of a 1,024-feature dashboard pass and most of a feature page."""
    scale = 10.0**digits
    return (t.double() * scale).round().div(scale).tolist()


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
    seq_l: list[int],
    pos_l: list[int],
    ids_l: list[list[int]],
    acts_l: list[list[float]],
    val_l: list[float],
    shares_l: list[float],
    counts: list[int],
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
    with open(path, "wb") as fh, gc_paused():
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


@contextmanager
def gc_paused() -> Iterator[None]:
    """The garbage collector off for a loop that makes millions of small lists (it only slows it)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
