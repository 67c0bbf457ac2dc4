"""Loupe's budgets, measured on this machine and written to bench/RESULTS.md.

  build    a fresh `loupe build --foreground` of the demo world, wall time per step (job rows)
  startup  `loupe run` on that built workspace: seconds until /api/health and / answer
  generate greedy decoding through the TransformerBridge (full recompute, what /api/generate does)
           against Hugging Face `generate` with a KV cache on the same model, same prompts: a ratio

usage: python bench/run.py [--workspace DIR] [--skip-build]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOUPE = [sys.executable, "-m", "loupe.cli"]


def step_times(ws: Path) -> list[tuple[str, float, str]]:
    import sqlalchemy

    eng = sqlalchemy.create_engine(f"sqlite:///{ws / 'loupe.db'}")
    with eng.connect() as c:
        rows = c.execute(
            sqlalchemy.text("select name, started_at, finished_at, status from jobs where kind='build' order by id")
        ).all()
    eng.dispose()
    out = []
    from datetime import datetime

    for name, a, b, status in rows:
        if a and b:
            dt = (datetime.fromisoformat(str(b)) - datetime.fromisoformat(str(a))).total_seconds()
            out.append((name, dt, status))
    return out


def bench_build(ws: Path, env: dict) -> dict:
    t0 = time.monotonic()
    # the budget is for what `make run` waits for: everything up to the trained model; the analyses
    # run afterwards as background jobs while the server is up
    subprocess.run(LOUPE + ["build", "--foreground"], env=env, check=True)
    total = time.monotonic() - t0
    return {"total_s": round(total, 1), "steps": [(n, round(s, 1), st) for n, s, st in step_times(ws)]}


def _wait(url: str, deadline: float) -> float:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.monotonic()
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(url)


def bench_startup(env: dict, port: int = 8765) -> dict:
    env = {**env, "LOUPE_PORT": str(port)}
    t0 = time.monotonic()
    proc = subprocess.Popen(LOUPE + ["run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        health = _wait(f"http://127.0.0.1:{port}/api/health", t0 + 120) - t0
        ui = _wait(f"http://127.0.0.1:{port}/", t0 + 120) - t0
        g0 = time.monotonic()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/generate",
            method="POST",
            headers={"content-type": "application/json"},
            data=json.dumps(
                {"prompt": "User: How do I bake bread at home?\nAssistant:", "max_new_tokens": 24}
            ).encode(),
        )
        urllib.request.urlopen(req, timeout=60).read()
        first_gen = time.monotonic() - g0
    finally:
        proc.terminate()
        proc.wait(10)
    return {"health_s": round(health, 2), "ui_s": round(ui, 2), "first_generate_s": round(first_gen, 2)}


def bench_generate(ws: Path, n_prompts: int = 20, new_tokens: int = 24) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from loupe.core.generation import decode
    from loupe.demo.chat import chat_prompt, instructions
    from loupe.services.models import load_bridge

    torch.set_num_threads(os.cpu_count() or 1)
    path = str(ws / "artifacts" / "model")
    bridge, tok = load_bridge(path)
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    prompts = [chat_prompt(i.text) for i in instructions(0) if i.split == "heldout"][:n_prompts]
    ids = [[tok.bos_token_id] + tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    t0 = time.monotonic()
    eos = tok.eos_token_id
    ours = [decode(bridge, x, new_tokens, stop_ids=(eos,)) for x in ids]
    t_ours = time.monotonic() - t0
    t0 = time.monotonic()
    theirs = []
    with torch.no_grad():
        for x in ids:
            t = torch.tensor([x])
            g = hf.generate(
                input_ids=t,
                attention_mask=torch.ones_like(t),
                max_new_tokens=new_tokens,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=eos,
            )
            out = g[0, len(x) :].tolist()
            theirs.append(out[: out.index(eos)] if eos in out else out)  # both stop at EOS, which neither returns
    t_hf = time.monotonic() - t0
    same = sum(a == b for a, b in zip(ours, theirs))
    n_ours, n_hf = sum(map(len, ours)), sum(map(len, theirs))
    return {
        "prompts": n_prompts,
        "max_new_tokens": new_tokens,
        "tokens_generated": n_ours,
        "bridge_recompute_s": round(t_ours, 2),
        "hf_kv_cache_s": round(t_hf, 2),
        "ratio_per_token": round((t_ours / max(n_ours, 1)) / (t_hf / max(n_hf, 1)), 2),
        "identical_outputs": f"{same}/{n_prompts}",
        "bridge_ms_per_token": round(1000 * t_ours / max(n_ours, 1), 1),
        "hf_ms_per_token": round(1000 * t_hf / max(n_hf, 1), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/loupe-bench"))
    ap.add_argument("--skip-build", action="store_true")
    args = ap.parse_args()
    ws = args.workspace.resolve()
    env = {**os.environ, "LOUPE_WORKSPACE": str(ws), "HF_HUB_OFFLINE": "1"}
    res: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    }
    if not args.skip_build:
        if ws.exists():
            import shutil

            shutil.rmtree(ws)
        res["build"] = bench_build(ws, env)
    res["startup"] = bench_startup(env)
    res["generate"] = bench_generate(ws)
    print(json.dumps(res, indent=1))
    (ROOT / "bench" / "last_run.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
