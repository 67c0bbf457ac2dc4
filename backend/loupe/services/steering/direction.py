"""The refusal direction (Arditi et al. 2024): difference of means between harmful and harmless
instructions at every candidate (residual hook x post-instruction position), each scored on other
instructions by its bypass score (refusal with the direction ablated), induce score (refusal with it
added) and KL on harmless prompts under ablation; the paper's filters and a selection rule pick one.

    instructions -> post-instruction activations (fp64 means) -> candidates -> scores -> selection
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from loupe.core import steering as S
from loupe.core.chat import REFUSAL_PREFIXES
from loupe.core.config import Progress, no_progress
from loupe.core.generation import greedy_batch
from loupe.errors import Unprocessable
from loupe.services.models import LoadedModel, locked_forward

Forward = Callable[[Tensor], Tensor]


def refusal_token_ids(lm: LoadedModel) -> list[int]:
    """First tokens of the refusal prefixes as they follow the chat prompt (a space, then the prefix)."""
    tokenizer, prompt = lm.tokenizer, lm.chat.prompt("x")
    ids = set()
    for p in REFUSAL_PREFIXES:
        full = tokenizer(prompt + " " + p, add_special_tokens=False)["input_ids"]
        head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if full[: len(head)] == head and len(full) > len(head):
            ids.add(full[len(head)])
    return sorted(ids)


def encode_prompts(lm: LoadedModel, instructions: Sequence[str]) -> list[list[int]]:
    return [lm.encode_prompt(lm.chat.prompt(t)) for t in instructions]


def padded(encoded: Sequence[list[int]], batch_size: int = 128) -> Iterable[tuple[list[int], Tensor, Tensor]]:
    """(indices, ids [batch, longest] right-padded with 0, lengths): prompts sorted by length so a
    batch wastes little. Causal attention: padding after a row's end never changes its positions."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    for s in range(0, len(order), batch_size):
        chunk = order[s : s + batch_size]
        lengths = torch.tensor([len(encoded[i]) for i in chunk])
        ids = torch.zeros(len(chunk), int(lengths.max()), dtype=torch.long)
        for j, i in enumerate(chunk):
            ids[j, : len(encoded[i])] = torch.tensor(encoded[i])
        yield chunk, ids, lengths


def post_instruction_ids(lm: LoadedModel) -> list[int]:
    return list(lm.tokenizer(lm.chat.post_instruction, add_special_tokens=False)["input_ids"])


def with_post_instruction(lm: LoadedModel, encoded: list[list[int]]) -> list[list[int]]:
    """Only prompts whose last tokens are exactly the post-instruction tokens (BPE may merge otherwise)."""
    tail = post_instruction_ids(lm)
    return [e for e in encoded if e[-len(tail) :] == tail]


def last_logits(forward: Forward, encoded: Sequence[list[int]], batch_size: int = 128) -> Tensor:
    """Next-token logits (float64) after each prompt, [n, d_vocab]."""
    rows: dict[int, Tensor] = {}
    for idx, ids, lengths in padded(encoded, batch_size):
        logits = forward(ids)[torch.arange(len(idx)), lengths - 1].double()
        for i, row in zip(idx, logits):
            rows[i] = row
    return torch.stack([rows[i] for i in range(len(encoded))]) if rows else torch.empty(0, 0)


def completions(
    lm: LoadedModel, forward: Forward, encoded: Sequence[list[int]], max_new_tokens: int, batch_size: int = 128
) -> list[str]:
    out = [""] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    for s in range(0, len(order), batch_size):
        chunk = order[s : s + batch_size]
        rows = greedy_batch(forward, [encoded[i] for i in chunk], max_new_tokens, lm.tokenizer.eos_token_id, lm.n_ctx)
        for i, row in zip(chunk, rows):
            out[i] = lm.tokenizer.decode(row)
    return out


def candidate_hooks(n_layers: int) -> list[tuple[str, int]]:
    """(hook, depth): resid_pre of every block, and the last block's resid_post."""
    return [(f"blocks.{layer}.hook_resid_pre", layer) for layer in range(n_layers)] + [
        (f"blocks.{n_layers - 1}.hook_resid_post", n_layers)
    ]


def compute_refusal_direction(
    lm: LoadedModel,
    harmful: Sequence[str],
    harmless: Sequence[str],
    select_harmful: Sequence[str],
    select_harmless: Sequence[str],
    progress: Progress = no_progress,
    batch_size: int = 128,
    rule: str = "bypass_minus_induce",
) -> dict[str, Any]:
    """Difference of means at every (hook, post-instruction position) candidate from (harmful,
    harmless), scored on (select_harmful, select_harmless); returns the selected candidate's
    r, mu_minus, mu_plus and the whole candidate table. `rule`: see core.steering.select_direction."""
    if rule not in S.SELECTION_RULES:
        raise Unprocessable(f"unknown selection rule {rule!r}; choose one of {list(S.SELECTION_RULES)}")
    n_layers = int(lm.info["n_layers"])
    names = [h for h, _ in candidate_hooks(n_layers)]
    n_pos = len(post_instruction_ids(lm))
    enc = _encoded_sets(lm, harmful, harmless, select_harmful, select_harmless)

    def cached(ids: Tensor) -> dict[str, Tensor]:
        with lm.lock, torch.no_grad():
            _, cache = lm.bridge.run_with_cache(ids, names_filter=lambda n: n in names)
        return {n: cache[n] for n in names}

    progress(0, 4, "mean activations on harmful and harmless instructions")
    means = {
        side: S.last_position_means(cached, ((b, n) for _, b, n in padded(enc[side], batch_size)), names, n_pos)
        for side in ("harmful", "harmless")
    }
    refusal_ids = refusal_token_ids(lm)
    cands, vectors, base_scores = _score_candidates(lm, enc, means, refusal_ids, n_pos, batch_size, progress)
    best, fallback = _select(cands, n_layers, rule)
    progress(3, 4, "selected" if not fallback else "no candidate passed the filters")
    r, mu_minus, mu_plus = vectors[(best.hook, best.position)]
    return {
        "hook": best.hook,
        "layer": int(best.layer),
        "position": best.position,
        "r": r,
        "mu_minus": mu_minus,
        "mu_plus": mu_plus,
        "scores": {
            "bypass_score": best.bypass_score,
            "induce_score": best.induce_score,
            "kl": best.kl,
            "norm": best.norm,
            "base_refusal_score": base_scores,
            "fallback": fallback,
            "selection_rule": rule,
            "n_harmful": len(enc["harmful"]),
            "n_harmless": len(enc["harmless"]),
            "n_select_harmful": len(enc["sel_harmful"]),
            "n_select_harmless": len(enc["sel_harmless"]),
            "refusal_token_ids": refusal_ids,
        },
        "candidates": {
            "rows": [c.to_dict() for c in cands],
            "n_layers": n_layers,
            "selection_rule": rule,
            "post_instruction_tokens": lm.token_strings(post_instruction_ids(lm)),
            "base_refusal_score": base_scores,
        },
    }


def _encoded_sets(
    lm: LoadedModel,
    harmful: Sequence[str],
    harmless: Sequence[str],
    select_harmful: Sequence[str],
    select_harmless: Sequence[str],
) -> dict[str, list[list[int]]]:
    sets = {"harmful": harmful, "harmless": harmless, "sel_harmful": select_harmful, "sel_harmless": select_harmless}
    enc = {k: with_post_instruction(lm, encode_prompts(lm, v)) for k, v in sets.items()}
    for k, v in enc.items():
        if not v:
            raise Unprocessable(f"no {k.replace('sel_', 'selection ')} prompt ends in the post-instruction tokens")
    return enc


def _score_candidates(
    lm: LoadedModel,
    enc: dict[str, list[list[int]]],
    means: dict[str, dict[str, Tensor]],
    refusal_ids: list[int],
    n_pos: int,
    batch_size: int,
    progress: Progress,
) -> tuple[list[S.Candidate], dict[tuple[str, int], tuple[Tensor, Tensor, Tensor]], dict[str, float]]:
    """Every candidate's bypass, induce and KL scores on the selection prompts."""
    n_layers = int(lm.info["n_layers"])
    hooks = candidate_hooks(n_layers)
    plain = locked_forward(lm)
    base_harmless = last_logits(plain, enc["sel_harmless"], batch_size)
    base_harmful = last_logits(plain, enc["sel_harmful"], batch_size)
    base_scores = {
        "harmful": float(S.refusal_score(base_harmful, refusal_ids).mean()),
        "harmless": float(S.refusal_score(base_harmless, refusal_ids).mean()),
    }
    cands: list[S.Candidate] = []
    vectors: dict[tuple[str, int], tuple[Tensor, Tensor, Tensor]] = {}
    total = len(hooks) * n_pos
    for n, ((hook, depth), p) in enumerate((hd, p) for hd in hooks for p in range(n_pos)):
        position = p - n_pos
        mu_plus, mu_minus = means["harmful"][hook][p], means["harmless"][hook][p]
        r = mu_plus - mu_minus
        c = S.Candidate(hook=hook, layer=depth, position=position, norm=float(r.norm()))
        vectors[(hook, position)] = (r, mu_minus, mu_plus)
        progress(1 + 2 * n / total, 4, f"scoring {hook} position {position}")
        if c.norm > 1e-9 * max(1.0, float(mu_plus.norm())):
            abl = locked_forward(lm, S.ablation_plan(r, n_layers))
            add = locked_forward(lm, [(hook, S.addition_hook(r, 1.0))])
            c.bypass_score = float(
                S.refusal_score(last_logits(abl, enc["sel_harmful"], batch_size), refusal_ids).mean()
            )
            c.kl = float(S.kl_divergence(base_harmless, last_logits(abl, enc["sel_harmless"], batch_size)).mean())
            c.induce_score = float(
                S.refusal_score(last_logits(add, enc["sel_harmless"], batch_size), refusal_ids).mean()
            )
        else:
            c.norm = 0.0
        cands.append(c)
    return cands, vectors, base_scores


def _select(cands: list[S.Candidate], n_layers: int, rule: str) -> tuple[S.Candidate, bool]:
    """The selected candidate and whether it is a fallback: when no candidate passes every filter (a
    2-layer model has one layer below 80% of depth), the lowest bypass score among those that induce
    refusal, else among all scored."""
    best = S.select_direction(cands, n_layers, rule=rule)
    if best is not None:
        return best, False
    scored = [c for c in cands if c.bypass_score is not None]
    if not scored:
        raise Unprocessable("every candidate direction is zero: the two prompt sets give the same activations")
    inducing = [c for c in scored if c.induce_score is not None and c.induce_score > 0]
    best = min(inducing or scored, key=lambda c: c.bypass_score or 0.0)
    best.selected = True
    return best, True
