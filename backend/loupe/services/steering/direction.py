"""The refusal direction (Arditi et al. 2024): difference of means between harmful and harmless
instructions at every candidate (residual hook x post-instruction position), each scored on other
instructions by its bypass score (refusal with the direction ablated), induce score (refusal with it
added) and KL on harmless prompts under ablation; the paper's filters pick one, or none.

    instructions (in the model's chat format) -> the model's own refusals -> refusal tokens
    -> post-instruction activations (fp64 means; massive dimensions) -> candidates -> scores -> selection

Any chat model: prompts are `lm.chat.prompt(instruction)` (the model's chat template where it has one),
so the candidates sit at the template's post-instruction tokens (ChatML: `<|im_end|>\\n<|im_start|>assistant\\n`).
Refusal tokens are the first tokens of the model's own greedy refusals of harmful instructions, with the
first tokens of the standard refusal prefixes as they follow the prompt (Arditi et al. chose theirs by
hand per model family from its refusals: "I" for Llama-3, Gemma, Yi; "I", "As" for Qwen). Massive
activations (Sun et al. 2024) are found at every candidate hook and kept out of every direction (see
core.massive.without_dims). No candidate passing the filters is an answer, not an error: `passed` is
false with the reason and the best candidates' scores, and no model-breaking direction is offered.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from loupe.core import massive as M
from loupe.core import steering as S
from loupe.core.chat import REFUSAL_PREFIXES, is_refusal
from loupe.core.config import Progress, no_progress
from loupe.core.generation import greedy_batch
from loupe.errors import Unprocessable
from loupe.services.models import LoadedModel, locked_forward

Forward = Callable[[Tensor], Tensor]

N_OWN_REFUSALS = 32  # harmful instructions completed greedily to find the model's own refusal tokens
OWN_REFUSAL_TOKENS = 16  # greedy tokens each: is_refusal looks at the first 64 characters
N_BEST = 5  # candidates reported with their scores when none passes


def prefix_refusal_ids(lm: LoadedModel) -> list[int]:
    """First tokens of the standard refusal prefixes as they follow this model's chat prompt: after a
    template's assistant header directly (`I`), after the plain format's `Assistant:` with a space (` I`)."""
    prompt, lead = lm.chat.prompt("x"), lm.chat.reply_lead
    head = lm.encode_prompt(prompt)
    ids = set()
    for p in REFUSAL_PREFIXES:
        full = lm.encode_prompt(prompt + lead + p)
        if full[: len(head)] == head and len(full) > len(head):
            ids.add(full[len(head)])
    return sorted(ids)


def own_refusals(
    lm: LoadedModel, encoded: Sequence[list[int]], max_new_tokens: int = OWN_REFUSAL_TOKENS, batch_size: int = 128
) -> dict[str, Any]:
    """The model's greedy completions of (harmful) prompts: how many it refuses (`is_refusal`), the
    first token of each refusal (a token that decodes to whitespace only is skipped: it begins helpful
    answers as much as refusals) and a few examples."""
    rows = greedy_ids(lm, locked_forward(lm), encoded, max_new_tokens, batch_size)
    texts = [lm.tokenizer.decode(r) for r in rows]
    first: Counter[int] = Counter()
    refused = 0
    for row, text in zip(rows, texts):
        if row and is_refusal(text):
            refused += 1
            if lm.tokenizer.decode([row[0]]).strip():
                first[row[0]] += 1
    return {
        "n_completions": len(rows),
        "n_refusals": refused,
        "first_token_counts": dict(first),
        "examples": [t for t in texts if is_refusal(t)][:3] or texts[:3],
    }


def refusal_tokens(lm: LoadedModel, own: dict[str, Any]) -> list[dict[str, Any]]:
    """The refusal tokens: the first tokens of the model's own refusals with those of the prefixes, each
    with its string, whether a prefix gives it and how many of the model's refusals began with it."""
    prefix = set(prefix_refusal_ids(lm))
    counts: dict[int, int] = {int(k): int(v) for k, v in own["first_token_counts"].items()}
    return [
        {
            "id": t,
            "token": lm.tokenizer.decode([t]),
            "prefix": t in prefix,
            "own_refusals": counts.get(t, 0),
        }
        for t in sorted(prefix | set(counts))
    ]


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


def greedy_ids(
    lm: LoadedModel, forward: Forward, encoded: Sequence[list[int]], max_new_tokens: int, batch_size: int = 128
) -> list[list[int]]:
    """Greedy continuations (token ids, stopped before EOS) of each prompt, batched by length."""
    out: list[list[int]] = [[] for _ in encoded]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    for s in range(0, len(order), batch_size):
        chunk = order[s : s + batch_size]
        rows = greedy_batch(forward, [encoded[i] for i in chunk], max_new_tokens, lm.tokenizer.eos_token_id, lm.n_ctx)
        for i, row in zip(chunk, rows):
            out[i] = row
    return out


def completions(
    lm: LoadedModel, forward: Forward, encoded: Sequence[list[int]], max_new_tokens: int, batch_size: int = 128
) -> list[str]:
    return [lm.tokenizer.decode(row) for row in greedy_ids(lm, forward, encoded, max_new_tokens, batch_size)]


def candidate_hooks(
    n_layers: int, layer_stride: int = 1, dense_from: float | None = None, max_depth: float = S.MAX_DEPTH
) -> list[tuple[str, int]]:
    """(hook, depth): resid_pre of every block (every `layer_stride`-th: a cheaper scan of a deep model
    on a CPU), and the last block's resid_post. `dense_from`: also every block from that fraction of the
    depth up to the selection's bound (`max_depth`), where a stride would skip the layers that matter,
    such as a fine-tune's adapted blocks below the bound."""
    layers = set(range(0, n_layers, max(1, layer_stride)))
    if dense_from is not None:
        first = round(dense_from * n_layers)
        layers |= {b for b in range(first, n_layers) if b < max_depth * n_layers}
    return [(f"blocks.{layer}.hook_resid_pre", layer) for layer in sorted(layers)] + [
        (f"blocks.{n_layers - 1}.hook_resid_post", n_layers)
    ]


def post_instruction_means(
    lm: LoadedModel,
    enc: Mapping[str, Sequence[list[int]]],
    names: Sequence[str],
    n_pos: int,
    batch_size: int = 128,
) -> tuple[dict[str, dict[str, Tensor]], dict[str, M.MagnitudeStats]]:
    """({"harmful"|"harmless": {hook: mean activation (float64) at each of the last `n_pos` tokens, [n_pos, d]}},
    each hook's magnitude statistics over every real token of both sets) of the encoded prompts `enc`."""

    def cached(ids: Tensor) -> dict[str, Tensor]:
        with lm.lock, torch.no_grad():
            _, cache = lm.bridge.run_with_cache(ids, names_filter=lambda n: n in names)
        return {n: cache[n] for n in names}

    stats: dict[str, M.MagnitudeStats] = {}
    means = {
        side: S.last_position_means(
            cached, ((b, n) for _, b, n in padded(enc[side], batch_size)), names, n_pos, stats=stats
        )
        for side in ("harmful", "harmless")
    }
    return means, stats


def compute_refusal_direction(
    lm: LoadedModel,
    harmful: Sequence[str],
    harmless: Sequence[str],
    select_harmful: Sequence[str],
    select_harmless: Sequence[str],
    progress: Progress = no_progress,
    batch_size: int = 128,
    rule: str = "bypass_minus_induce",
    n_own_refusals: int = N_OWN_REFUSALS,
    own_refusal_tokens: int = OWN_REFUSAL_TOKENS,
    layer_stride: int = 1,
    dense_from: float | None = None,
) -> dict[str, Any]:
    """Difference of means at every (hook, post-instruction position) candidate from (harmful,
    harmless), scored on (select_harmful, select_harmless). `rule`: see core.steering.select_direction.

    Returns `passed` (a candidate passed every filter), `reason` (why none did, else None), the
    direction (`hook`, `layer`, `position`, `r`, `mu_minus`, `mu_plus`) of the selected candidate, or
    when none passed of the kept one (`kept`: the best within the KL bound, core.steering.keep_candidate;
    the caller decides whether to save it), or None; `scores` and the whole `candidates` table."""
    if rule not in S.SELECTION_RULES:
        raise Unprocessable(f"unknown selection rule {rule!r}; choose one of {list(S.SELECTION_RULES)}")
    n_layers = int(lm.info["n_layers"])
    hooks = candidate_hooks(n_layers, layer_stride, dense_from)
    names = [h for h, _ in hooks]
    n_pos = len(post_instruction_ids(lm))
    enc = encoded_sets(lm, harmful, harmless, select_harmful, select_harmless)

    progress(0, 5, "the model's own refusals of harmful instructions")
    own = own_refusals(lm, enc["harmful"][:n_own_refusals], own_refusal_tokens, batch_size)
    tokens = refusal_tokens(lm, own)
    refusal_ids = [t["id"] for t in tokens]
    if not refusal_ids:
        raise Unprocessable("no refusal token: no refusal prefix tokenizes after the prompt and the model refused none")

    progress(1, 5, "mean activations on harmful and harmless instructions")
    means, stats = post_instruction_means(lm, enc, names, n_pos, batch_size)
    massive = massive_summary(stats, names)
    cands, vectors, base_scores = _score_candidates(
        lm, enc, means, massive["dims"], refusal_ids, hooks, n_pos, batch_size, progress
    )
    selected = S.select_direction(cands, n_layers, rule=rule)
    chosen = selected or S.keep_candidate(cands, n_layers, rule=rule)
    reason = None if selected is not None else _no_pass_reason(cands, base_scores)
    progress(4, 5, "selected" if selected is not None else "no candidate passed the filters")
    r, mu_minus, mu_plus = vectors[(chosen.hook, chosen.position)] if chosen is not None else (None, None, None)
    scored = [c for c in cands if c.bypass_score is not None and c.induce_score is not None]
    best = sorted(scored, key=lambda c: _objective(c, rule))[:N_BEST]
    scores = {
        "passed": selected is not None,
        "reason": reason,
        "kept": selected is None and chosen is not None,
        "bypass_score": chosen.bypass_score if chosen else None,
        "induce_score": chosen.induce_score if chosen else None,
        "kl": chosen.kl if chosen else None,
        "norm": chosen.norm if chosen else None,
        "base_refusal_score": base_scores,
        "selection_rule": rule,
        "n_candidates": len(cands),
        "n_harmful": len(enc["harmful"]),
        "n_harmless": len(enc["harmless"]),
        "n_select_harmful": len(enc["sel_harmful"]),
        "n_select_harmless": len(enc["sel_harmless"]),
        "chat": {
            "template": lm.chat.template,
            "post_instruction": lm.chat.post_instruction,
            "problem": lm.chat_problem,
        },
        "refusal_token_ids": refusal_ids,
        "refusal_tokens": tokens,
        "own_refusals": own,
        "massive": massive,
        "best": [c.to_dict() for c in best],
    }
    return {
        "passed": selected is not None,
        "reason": reason,
        "kept": scores["kept"],
        "hook": chosen.hook if chosen else None,
        "layer": int(chosen.layer) if chosen else None,
        "position": chosen.position if chosen else None,
        "r": r,
        "mu_minus": mu_minus,
        "mu_plus": mu_plus,
        "scores": scores,
        "candidates": {
            "rows": [c.to_dict() for c in cands],
            "n_layers": n_layers,
            "selection_rule": rule,
            "post_instruction_tokens": lm.token_strings(post_instruction_ids(lm)),
            "base_refusal_score": base_scores,
            "massive_dims": massive["dims"],
        },
    }


def _objective(c: S.Candidate, rule: str) -> float:
    assert c.bypass_score is not None and c.induce_score is not None
    return c.bypass_score - (c.induce_score if rule == "bypass_minus_induce" else 0.0)


def outcome(res: dict[str, Any]) -> dict[str, Any]:
    """What a job answers about a direction computation: passed or not, why not, the chosen candidate's
    place and scores, the best candidates, the refusal tokens, the own refusals seen and the massive
    dimensions."""
    sc = res["scores"]
    return {
        "passed": res["passed"],
        "reason": res["reason"],
        "kept": res["kept"],
        "hook": res["hook"],
        "position": res["position"],
        **{k: sc[k] for k in ("bypass_score", "induce_score", "kl", "base_refusal_score", "best", "refusal_tokens")},
        "own_refusals": {k: sc["own_refusals"][k] for k in ("n_completions", "n_refusals")},
        "massive_dims": sc["massive"]["dims"],
    }


def massive_summary(stats: dict[str, M.MagnitudeStats], names: Sequence[str]) -> dict[str, Any]:
    """The massive dimensions of each hook (core.steering.massive_dims) and their union, which every
    candidate direction leaves out (ablation acts at every layer, so a dimension massive at any is kept
    whole everywhere), with each one's peak |activation| and its ratio to that hook's median."""
    by_hook = {h: M.massive_dims(stats[h]) for h in names if h in stats}
    dims = sorted({d for ds in by_hook.values() for d in ds})
    peaks: dict[str, dict[str, Any]] = {}
    for d in dims:
        h = max((h for h, ds in by_hook.items() if d in ds), key=lambda h: float(_peak(stats[h])[d]))
        value = float(_peak(stats[h])[d])
        peaks[str(d)] = {"hook": h, "peak": value, "ratio_to_median": value / max(stats[h].median, 1e-12)}
    return {
        "criterion": (
            f"peak |activation| > {M.MASSIVE_MIN:g} and >= {M.MASSIVE_RATIO:g} x the hook's median |activation| "
            "(Sun et al. 2024); left out of every direction"
        ),
        "dims": dims,
        "by_hook": {h: ds for h, ds in by_hook.items() if ds},
        "peaks": peaks,
    }


def _peak(st: M.MagnitudeStats) -> Tensor:
    assert st.peak is not None
    return st.peak


def _no_pass_reason(cands: list[S.Candidate], base: dict[str, float]) -> str:
    zero = sum(c.norm == 0 for c in cands)
    fails: Counter[str] = Counter(r for c in cands if c.norm > 0 for r in c.reasons)
    parts = [f"{zero} are zero (the same activations on both sets)"] if zero else []
    parts += [f"{n} fail {FILTERS.get(r, r)}" for r, n in fails.items()]
    return (
        f"No candidate direction passes Arditi et al.'s filters (KL <= 0.1 under ablation, layer < 80% of depth, "
        f"induce score > 0): of {len(cands)} candidates, {', '.join(parts)}. The model's refusal score (log-odds of "
        f"the refusal tokens) is {base['harmful']:.2f} on harmful and {base['harmless']:.2f} on harmless selection "
        "prompts. No refusal direction is selected."
    )


FILTERS = {"KL > 0.1": "KL <= 0.1", "induce score <= 0": "induce > 0", "layer >= 0.8 of depth": "layer < 80% of depth"}


def encoded_sets(
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
    massive: Sequence[int],
    refusal_ids: list[int],
    hooks: list[tuple[str, int]],
    n_pos: int,
    batch_size: int,
    progress: Progress,
) -> tuple[list[S.Candidate], dict[tuple[str, int], tuple[Tensor, Tensor, Tensor]], dict[str, float]]:
    """Every candidate's bypass, induce and KL scores on the selection prompts; each direction is
    mu+ - mu- without the massive dimensions."""
    n_layers = int(lm.info["n_layers"])
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
        raw = mu_plus - mu_minus
        r = M.without_dims(raw, massive)
        raw_sq = float(raw.pow(2).sum())
        share = (raw_sq - float(r.pow(2).sum())) / raw_sq if raw_sq > 0 else 0.0
        c = S.Candidate(hook=hook, layer=depth, position=position, norm=float(r.norm()), massive_share=share)
        vectors[(hook, position)] = (r, mu_minus, mu_plus)
        progress(1 + 3 * (n + 1) / total, 5, f"scoring {hook} position {position}")
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
