"""Plotly figures of a training-Jacobian run: the spectrum with its regions, the alignment of
singular vectors, the perturbation experiment and the bulk overlap across seeds."""

from __future__ import annotations

import json
import math
from typing import Any

import plotly.graph_objects as go

REGION_COLORS = {"chaotic": "rgba(214,39,40,0.12)", "bulk": "rgba(44,160,44,0.15)", "stable": "rgba(31,119,180,0.12)"}


def _fig(fig: go.Figure) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(fig.to_json())
    return out


def spectrum_figure(
    s: list[float], summary: dict[str, Any], overlays: dict[str, list[float]] | None = None, tol: float = 0.1
) -> dict[str, Any]:
    fig = go.Figure()
    fig.add_trace(go.Scatter(y=s, mode="lines", name="this run", line={"width": 2}))
    for name, vals in (overlays or {}).items():
        fig.add_trace(go.Scatter(y=vals, mode="lines", name=name, line={"width": 1, "dash": "dot"}))
    top = max([s[0]] + [v[0] for v in (overlays or {}).values() if v]) * 1.5
    bottom = max(min([s[-1]] + [v[-1] for v in (overlays or {}).values() if v]) / 1.5, 1e-12)
    bands = {"chaotic": (1 + tol, top), "bulk": (1 - tol, 1 + tol), "stable": (bottom, 1 - tol)}
    for name, (y0, y1) in bands.items():
        fig.add_hrect(y0=y0, y1=y1, fillcolor=REGION_COLORS[name], line_width=0)
    counts = " · ".join(
        f"{name} {summary.get(name, {}).get('count', 0):,} ({summary.get(name, {}).get('fraction', 0):.0%})"
        for name in bands
    )
    fig.update_layout(
        title=f"Training-Jacobian singular values: {counts}",
        xaxis_title="index i (descending)",
        yaxis_title="sigma_i",
        yaxis_type="log",
        yaxis_range=[_log10(bottom), _log10(top)],
        margin={"t": 40, "r": 10, "l": 60, "b": 40},
        height=380,
        legend={"orientation": "h"},
    )
    return _fig(fig)


def _log10(x: float) -> float:
    return math.log10(x)


def alignment_figure(s: list[float], align: list[float], tol: float = 0.1) -> dict[str, Any]:
    fig = go.Figure(go.Scattergl(x=s, y=align, mode="markers", marker={"size": 3}, name="cos(u_i, v_i)"))
    for x in (1 - tol, 1 + tol):
        fig.add_vline(x=x, line_dash="dot", line_color="gray")
    fig.update_layout(
        title="Alignment of left and right singular vectors",
        xaxis_title="sigma_i",
        yaxis_title="cos(u_i, v_i)",
        xaxis_type="log",
        yaxis_range=[-1.05, 1.05],
        margin={"t": 40, "r": 10, "l": 60, "b": 40},
        height=340,
    )
    return _fig(fig)


def perturbation_figure(by_region: dict[str, dict[str, Any]]) -> dict[str, Any]:
    regions = [r for r in ("chaotic", "bulk", "stable", "random") if r in by_region]
    fig = go.Figure(
        [
            go.Bar(name="KL on test set (in distribution)", x=regions, y=[by_region[r]["kl_test"] for r in regions]),
            go.Bar(
                name="KL on white noise (out of distribution)", x=regions, y=[by_region[r]["kl_noise"] for r in regions]
            ),
        ]
    )
    fig.update_layout(
        title="Retrained from theta_0 + eps v: change of the trained network",
        barmode="group",
        yaxis_type="log",
        yaxis_title="mean KL(original || perturbed)",
        margin={"t": 40, "r": 10, "l": 60, "b": 40},
        height=340,
        legend={"orientation": "h"},
    )
    return _fig(fig)


def overlap_figure(rows: list[dict[str, Any]]) -> dict[str, Any]:
    x = [f"seed {r['seed']}" for r in rows]
    fig = go.Figure(
        [
            go.Bar(name="bulk overlap", x=x, y=[r["overlap"] for r in rows]),
            go.Bar(name="random baseline k/P", x=x, y=[r["baseline"] for r in rows]),
        ]
    )
    fig.update_layout(
        title="Bulk-subspace overlap with other seeds",
        barmode="group",
        yaxis_range=[0, 1],
        margin={"t": 40, "r": 10, "l": 60, "b": 40},
        height=300,
        legend={"orientation": "h"},
    )
    return _fig(fig)
