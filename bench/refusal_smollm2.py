"""The refusal pipeline on a real chat model (SmolLM2-135M-Instruct by default), subsampled to fit about
15 minutes on 2 CPU cores: what Loupe's direction computation gives there, honestly.

  rates      greedy refusal rate (is_refusal on the first 64 characters) on held-out harmful and
             harmless instructions of the demo world (loupe.demo.chat.instructions), in the model's
             chat template
  direction  compute_refusal_direction on train-split instructions: the model's own refusals and the
             refusal tokens, the massive dimensions, how many candidates pass Arditi et al.'s
             filters, what is selected or kept (or why nothing is)
  steering   when a direction is selected or kept: refusal rates and KL under directional ablation and
             activation addition (alpha 1) on the held-out subset

usage: python bench/refusal_smollm2.py [--model /work/smollm2-hf] [--every 2] [--n-dir 32] [--n-select 4]
       [--n-rates 24] [--n-own 16] [--tokens 16] [--skip-base] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="/work/smollm2-hf")
    ap.add_argument("--every", type=int, default=2, help="candidate layers: every n-th block's resid_pre, and the last")
    ap.add_argument("--n-dir", type=int, default=32, help="train instructions per side for the means")
    ap.add_argument("--n-select", type=int, default=4, help="train instructions per side for the scores")
    ap.add_argument("--n-own", type=int, default=16, help="harmful instructions completed for own refusals")
    ap.add_argument("--n-rates", type=int, default=24, help="held-out instructions per side for refusal rates")
    ap.add_argument("--tokens", type=int, default=16, help="greedy tokens per completion")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--skip-base", action="store_true", help="skip the unsteered refusal rates")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()

    import torch

    from loupe.core import steering as S
    from loupe.core.chat import is_refusal
    from loupe.demo.chat import instructions
    from loupe.services.models import LoadedModel, describe, load_bridge, locked_forward
    from loupe.services.steering import direction as D

    t0 = time.monotonic()
    report: dict = {"model": a.model, "args": vars(a) | {"out": str(a.out)}}

    def say(k: str, v: object) -> None:
        report[k] = v
        print(f"[{time.monotonic() - t0:6.0f}s] {k}: {json.dumps(v, default=str)[:1500]}", flush=True)

    bridge, tok = load_bridge(a.model)
    lm = LoadedModel(id="smollm2", bridge=bridge, tokenizer=tok, info=describe(bridge))
    n_layers = int(lm.info["n_layers"])
    say("chat", {"template": lm.chat.template, "user": lm.chat.user, "assistant": lm.chat.assistant})
    say("post_instruction_tokens", lm.token_strings(D.post_instruction_ids(lm)))

    ins = instructions(0)
    pick = lambda harmful, split: [i.text for i in ins if i.harmful == harmful and i.split == split]  # noqa: E731
    train_h, train_l = pick(True, "train"), pick(False, "train")
    held_h, held_l = pick(True, "heldout")[: a.n_rates], pick(False, "heldout")[: a.n_rates]

    plain = locked_forward(lm)

    def rates(fwd, label: str) -> dict:
        ch = D.completions(lm, fwd, D.encode_prompts(lm, held_h), a.tokens, a.batch)
        cl = D.completions(lm, fwd, D.encode_prompts(lm, held_l), a.tokens, a.batch)
        out = {
            "refusal_harmful": sum(map(is_refusal, ch)) / len(ch),
            "refusal_harmless": sum(map(is_refusal, cl)) / len(cl),
            "n": [len(ch), len(cl)],
            "examples_harmful": ch[:3],
            "examples_harmless": cl[:2],
        }
        say(f"rates.{label}", out)
        return out

    if not a.skip_base:
        rates(plain, "base")

    # every n-th block's resid_pre and the last resid_post (the full run scores all 31 hooks)
    full = D.candidate_hooks

    def fewer(n: int) -> list[tuple[str, int]]:
        hs = full(n)
        return [h for h in hs[:-1] if h[1] % a.every == 0] + [hs[-1]]

    D.candidate_hooks = fewer  # type: ignore[assignment]
    n, k = a.n_dir, a.n_select
    t1 = time.monotonic()
    res = D.compute_refusal_direction(
        lm,
        train_h[:n],
        train_l[:n],
        train_h[n : n + k],
        train_l[n : n + k],
        batch_size=a.batch,
        n_own_refusals=a.n_own,
        own_refusal_tokens=a.tokens,
        progress=lambda i, total, msg: print(f"  {i:.2f}/{total} {msg}", flush=True) if "scoring" not in msg else None,
    )
    sc = res["scores"]
    say("direction_seconds", round(time.monotonic() - t1))
    say("own_refusals", sc["own_refusals"])
    say("refusal_tokens", sc["refusal_tokens"])
    say("massive", sc["massive"])
    rows = res["candidates"]["rows"]
    say(
        "candidates",
        {
            "n": len(rows),
            "passed": sum(not r["reasons"] for r in rows),
            "fail_kl": sum("KL > 0.1" in r["reasons"] for r in rows if r["norm"] > 0),
            "fail_induce": sum("induce score <= 0" in r["reasons"] for r in rows if r["norm"] > 0),
            "fail_depth": sum("layer >= 0.8 of depth" in r["reasons"] for r in rows),
            "zero": sum(r["norm"] == 0 for r in rows),
            "max_kl": max((r["kl"] for r in rows if r["kl"] is not None), default=None),
            "max_induce": max((r["induce_score"] for r in rows if r["induce_score"] is not None), default=None),
        },
    )
    say("base_refusal_score", sc["base_refusal_score"])
    say("passed", res["passed"])
    say("reason", res["reason"])
    say("best", sc["best"])
    say(
        "chosen",
        {k: res[k] for k in ("hook", "position", "kept")} | {k: sc[k] for k in ("bypass_score", "induce_score", "kl")},
    )

    if res["hook"] is not None:
        r = res["r"]
        base = D.last_logits(plain, D.encode_prompts(lm, held_l), a.batch)
        for label, plan in (
            ("ablation", S.ablation_plan(r, n_layers)),
            ("addition", [(res["hook"], S.addition_hook(r, 1.0))]),
        ):
            fwd = locked_forward(lm, plan)
            out = rates(fwd, label)
            kl = S.kl_divergence(base, D.last_logits(fwd, D.encode_prompts(lm, held_l), a.batch)).mean()
            say(f"kl_harmless.{label}", float(kl))
            report[f"rates.{label}"] = out
    say("seconds", round(time.monotonic() - t0))
    if a.out:
        a.out.write_text(json.dumps(report, indent=1, default=str))
    del torch


if __name__ == "__main__":
    main()
