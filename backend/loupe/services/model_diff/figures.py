"""Plotly figures of a model diff's result."""

from __future__ import annotations

import json
from typing import Any


def diff_figures(result: dict[str, Any]) -> dict[str, Any]:
    """Plotly figures of a diff: per-layer weight change (bars), per-layer activation change (lines), and
    the refusal directions' cosine per layer (a line per post-instruction position)."""
    import plotly.graph_objects as go

    def as_json(fig: Any) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(fig.to_json())
        return out

    w = result["weights"]
    dtick = max(1, int(result["n_layers"]) // 15)  # whole blocks on the axis
    xs = [str(i) for i in range(len(w["layers"]))] + ["outside"]
    weights = go.Figure(
        go.Bar(x=xs, y=[g["relative"] for g in w["layers"]] + [w["outside"]["relative"]], name="||ΔW|| / ||W||")
    )
    weights.update_layout(
        xaxis_title="block (outside: embeddings, final norm, unembedding)",
        yaxis_title="||ΔW||_F / ||W||_F",
        margin={"t": 10, "r": 10},
    )
    a = result["activations"]["layers"]
    acts = go.Figure()
    acts.add_trace(
        go.Scatter(
            x=[r["layer"] for r in a], y=[r["relative_l2"] for r in a], mode="lines+markers", name="mean ||Δh|| / ||h||"
        )
    )
    acts.add_trace(
        go.Scatter(
            x=[r["layer"] for r in a],
            y=[r["cosine"] for r in a],
            mode="lines+markers",
            name="mean cos(h_parent, h_child)",
            yaxis="y2",
        )
    )
    acts.update_layout(
        xaxis={"title": "block (residual stream after it)", "dtick": dtick},
        yaxis={"title": "relative change", "rangemode": "tozero"},
        yaxis2={"title": "cosine", "overlaying": "y", "side": "right", "range": [0, 1.05], "dtick": 0.25},
        margin={"t": 10, "r": 10},
        legend={"orientation": "h", "y": -0.25},
    )
    figures: dict[str, Any] = {"weights": as_json(weights), "activations": as_json(acts), "refusal": None}
    ref = result.get("refusal") or {}
    if not ref.get("skipped") and ref.get("layers"):
        fig = go.Figure()
        rows = ref["layers"]
        for p, tok in enumerate(ref["positions"]):
            fig.add_trace(
                go.Scatter(
                    x=[r["layer"] for r in rows],
                    y=[r["cosine"][p] for r in rows],
                    mode="lines+markers",
                    name=f"{p - len(ref['positions'])}: {tok!r}",
                )
            )
        fig.update_layout(
            xaxis={"title": "layer (resid_pre of the block; the last: resid_post of the last block)", "dtick": dtick},
            yaxis={"title": "cos(r_parent, r_child)"},  # autoscaled: a small fine-tune moves it in the third decimal
            margin={"t": 10, "r": 10},
            legend={"title": {"text": "post-instruction position"}},
        )
        figures["refusal"] = as_json(fig)
    return figures
