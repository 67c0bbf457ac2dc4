"""SmolLM2-135M-Instruct in a built smollm2 workspace (`LOUPE_WORLD=smollm2 loupe build`): memory and
decoding speed, each against a baseline in the same run.

  memory    resident set size of this process before and after loading the model through Loupe's
            registry, and after the first decode (the plain module for the KV cache shares weights)
  generate  ms/token of greedy decoding of the same chat prompts, same number of tokens:
            Loupe without hooks (KV cache), Loupe with a hook plan (full prefix each step, what a
            steered stream does) and Hugging Face `generate` (KV cache) on a separately loaded model;
            the tokens must agree

For activation caching against TransformerLens `run_with_cache` and the feature page under 16
clients, see bench/saes.py (its usage line has the smollm2 arguments).

usage: python bench/smollm2.py --workspace DIR [--prompts 3] [--tokens 24]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

PROMPTS = [
    "Any advice on how to grow salt crystals?",
    "What is a Python decorator? Explain it simply.",
    "Write a short poem about the sea.",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=24)
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM

    from loupe.core import steering as S
    from loupe.core.generation import decode
    from loupe.jobs.memory import peak_mb, rss_mb
    from loupe.services.models import decoding_forward, locked_forward
    from loupe.settings import Settings, quiet_libraries
    from loupe.worlds import open_world

    quiet_libraries()
    mem = {"start_mb": round(rss_mb() or 0)}
    world, c = open_world(Settings(workspace=args.workspace, world="smollm2"))
    lm = c.models.get("smollm2")
    mem["loaded_mb"] = round(rss_mb() or 0)
    prompts = [lm.encode_prompt(lm.render_messages([{"role": "user", "content": p}])) for p in PROMPTS[: args.prompts]]
    n = args.tokens
    # a no-op hook plan: forces the full-prefix path with hooks attached, as steering does
    plan: S.HookPlan = [("blocks.15.hook_resid_pre", lambda x, hook=None: x)]

    def timed(fn):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        out = [fn(p) for p in prompts]
        return out, (time.perf_counter() - t0) * 1000 / (n * len(prompts))

    decode(decoding_forward(lm), prompts[0], 2)  # builds the plain module once
    mem["after_first_decode_mb"] = round(rss_mb() or 0)
    kv, kv_ms = timed(lambda p: decode(decoding_forward(lm), p, n, stop_ids=()))
    full, full_ms = timed(lambda p: decode(locked_forward(lm, plan), p, n, stop_ids=()))
    hf = AutoModelForCausalLM.from_pretrained(str(world.subject.model_dir)).eval()
    eos = lm.tokenizer.eos_token_id

    def hf_generate(p: list[int]) -> list[int]:
        ids = torch.tensor([p])
        with torch.no_grad():
            g = hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=eos,
            )
        return g[0, len(p) :].tolist()

    hf_generate(prompts[0][:8])
    ref, hf_ms = timed(hf_generate)
    mem["peak_mb"] = round(peak_mb() or 0)
    res = {
        "threads": torch.get_num_threads(),
        "memory": mem,
        "generate": {
            "prompts": len(prompts),
            "new_tokens": n,
            "loupe_kv_ms_per_token": round(kv_ms, 1),
            "loupe_hooked_full_prefix_ms_per_token": round(full_ms, 1),
            "hf_generate_ms_per_token": round(hf_ms, 1),
            "kv_over_hf": round(kv_ms / hf_ms, 2),
            "full_prefix_over_hf": round(full_ms / hf_ms, 2),
            "same_tokens_kv_vs_hf": kv == ref,
            "same_tokens_full_vs_hf": full == ref,
        },
    }
    print(json.dumps(res, indent=1))
    c.close()


if __name__ == "__main__":
    main()
