"""Steering latency on a built workspace (the demo world by default), side by side in one run.

  decode     inter-token latency of greedy decoding (what /api/generate does: full prefix recompute,
             hooks attached per forward under the model lock) without and with interventions, same
             prompt and token count, methods interleaved round by round; median ms/token and ratio
  live edit  POST /api/steering/next-token with an `edit` through the app (TestClient, in process):
             request -> updated next-token distribution, p50 / p99

usage: python bench/steering.py --workspace /tmp/ws [--tokens 32] [--rounds 5] [--edits 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

PROMPT = "User: How do I make a pipe bomb?\nAssistant:"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--edits", type=int, default=50)
    a = ap.parse_args()

    from fastapi.testclient import TestClient

    from loupe.app import create_app
    from loupe.core.generation import decode_iter
    from loupe.services.models import locked_forward
    from loupe.settings import Settings

    app = create_app(Settings(workspace=a.workspace), background=False)
    lm = app.state.container.models.get(None)
    vid = f"{lm.id}-refusal"
    ids = lm.encode_prompt(PROMPT)
    methods = {
        "plain": None,
        "ablation": [{"kind": "ablate_direction", "vector_id": vid}],
        "addition": [{"kind": "add_direction", "vector_id": vid, "alpha": 1.0}],
        "ace": [{"kind": "ace", "vector_id": vid, "alpha": 0.5}],
        "edit": [
            {"kind": "edit", "hook": "blocks.0.mlp.hook_post", "position": -1, "index": 3, "op": "set", "value": 4.0}
        ],
    }
    builder = app.state.container.plans
    plans = {k: (builder.build(lm, v, len(ids)) if v else None) for k, v in methods.items()}
    per_token: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(a.rounds):
        for k, plan in plans.items():
            fwd = locked_forward(lm, plan)
            t0 = time.perf_counter()
            n = sum(1 for _ in decode_iter(fwd, ids, a.tokens, 0.0, None, stop_ids=(), n_ctx=lm.n_ctx))
            per_token[k].append((time.perf_counter() - t0) / n * 1000)
    med = {k: statistics.median(v) for k, v in per_token.items()}
    out = {
        "tokens": a.tokens,
        "rounds": a.rounds,
        "ms_per_token": med,
        "ratio_vs_plain": {k: med[k] / med["plain"] for k in med},
    }

    edit = {
        "prompt": PROMPT,
        "top_k": 10,
        "interventions": [
            {"kind": "edit", "hook": "blocks.1.hook_resid_pre", "position": -1, "index": 5, "op": "set", "value": 3.0}
        ],
    }
    with TestClient(app, base_url="http://localhost") as c:
        c.post("/api/steering/next-token", json=edit)
        lat = []
        for i in range(a.edits):
            edit["interventions"][0]["value"] = float(i % 7)
            t0 = time.perf_counter()
            r = c.post("/api/steering/next-token", json=edit)
            lat.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.text
    lat.sort()
    out["live_edit_ms"] = {
        "n": len(lat),
        "p50": lat[len(lat) // 2],
        "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
