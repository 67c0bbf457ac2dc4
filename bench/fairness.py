"""Fair sharing of the model under a flood of generate requests (issue 19), on a built workspace:

  feature page   GET /api/saes/{sae}/features/{i} (precomputed pages; takes no model lock)
  activations    POST /api/saes/{sae}/activations (one forward pass under the model's lock)

Each is measured by one client of its own, sequentially, first on an idle server, then while `--flood`
other clients send POST /api/generate back to back; the flood's own throughput is reported too. The
server runs in its own process (as `loupe serve` does, without background jobs) with the model's lock
either Loupe's FIFO lock ("fair") or a plain threading.RLock ("plain", the lock before issue 19), so
both are measured side by side in one run. Machine load (1-minute load average) is printed with each.

usage: python bench/fairness.py --workspace DIR [--world micro] [--sae demo-mlp0] [--flood 8] [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
import urllib.request
from pathlib import Path

from harness import latency_stats, server

_SERVER = """
import sys, threading, uvicorn
from loupe.app import create_app
from loupe.settings import Settings
app = create_app(Settings(workspace=sys.argv[1], world=sys.argv[3]), background=False)
lm = app.state.container.models.get()
if sys.argv[4] == "plain":
    lm.lock = threading.RLock()
print(type(lm.lock).__name__, file=sys.stderr, flush=True)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def _call(url: str, body: dict | None = None) -> float:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=300) as r:
        r.read()
        assert r.status == 200, r.status
    return (time.perf_counter() - t0) * 1000


def _probe(base: str, sae: str, d_sae: int, n: int) -> dict:
    rng = random.Random(0)
    pages = [_call(f"{base}/api/saes/{sae}/features/{rng.randrange(d_sae)}") for _ in range(n)]
    text = "User: How do I bake bread at home?\nAssistant:"
    acts = [_call(f"{base}/api/saes/{sae}/activations", {"text": text, "top_k": 5}) for _ in range(max(1, n // 4))]
    return {
        "feature_page": latency_stats(pages),
        "activations": latency_stats(acts),
        "load_1m": round(os.getloadavg()[0], 2),
    }


def run(ws: Path, world: str, sae: str, lock: str, flood: int, n: int, max_new_tokens: int) -> dict:
    with server(ws, world, _SERVER, [lock]) as (base, _):
        d_sae = json.loads(urllib.request.urlopen(f"{base}/api/saes/{sae}").read())["d_sae"]
        _probe(base, sae, d_sae, 5)  # warm: tokenizer, SAE, model
        idle = _probe(base, sae, d_sae, n)
        stop, done = threading.Event(), []
        gen = {"prompt": "User: Tell me about rivers.\nAssistant:", "max_new_tokens": max_new_tokens, "temperature": 0}

        def flooder() -> None:
            while not stop.is_set():
                _call(f"{base}/api/generate", gen)
                done.append(1)

        threads = [threading.Thread(target=flooder, daemon=True) for _ in range(flood)]
        for t in threads:
            t.start()
        time.sleep(2.0)  # the flood is going
        t0 = time.monotonic()
        flooded = _probe(base, sae, d_sae, n)
        elapsed = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join(300)
        flooded["generate_per_s"] = round(len(done) / (elapsed + 2.0), 2)
        return {"lock": lock, "idle": idle, f"flood_{flood}": flooded}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--world", default="micro")
    ap.add_argument("--sae", default="demo-mlp0")
    ap.add_argument("--flood", type=int, default=8, help="concurrent generate clients")
    ap.add_argument("--requests", type=int, default=200, help="feature pages per measurement (activations: 1/4)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--locks", default="plain,fair")
    args = ap.parse_args()
    out = {"cpus": os.cpu_count(), "load_1m_before": round(os.getloadavg()[0], 2), "runs": []}
    for lock in args.locks.split(","):
        out["runs"].append(
            run(args.workspace, args.world, args.sae, lock, args.flood, args.requests, args.max_new_tokens)
        )
    out["load_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
