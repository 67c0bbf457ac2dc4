"""Steering in pure torch: refusal directions by difference of means, and the hook functions that
ablate, add, clamp or edit activations inside a TransformerLens `model.hooks(...)` context.

References
- Arditi, Obeso, Syed, Paleka, Panickssery, Gurnee, Nanda 2024, "Refusal in Language Models Is
  Mediated by a Single Direction": difference-of-means directions r = mu+ - mu- for every
  (layer, post-instruction position) candidate; directional ablation h' = h - (h . r^) r^ at every
  residual write; activation addition h' = h + r; selection by bypass score, induce score,
  KL <= 0.1 under ablation and layer < 0.8 L; refusal score = log-odds of refusal first tokens.
- Marshall, Scherlis, Belrose 2024, "Refusal in LLMs is an Affine Function": affine concept
  editing (ACE) h' = h - ((h - mu-) . r^) r^ + alpha r, which puts the projection on r^ at
  mu- . r^ + alpha ||r|| whatever the input was.
- SAE feature steering (Templeton et al. 2024, "Scaling Monosemanticity"): add c W_dec[i], or clamp
  feature i to c keeping the SAE's reconstruction error, h' = h + (c - f_i(h)) W_dec[i].
- Sun, Chen, Kolter, Liu 2024, "Massive Activations in Large Language Models": see core/massive.py;
  the means pass below also feeds its per-hook magnitude statistics.

A hook function has the TransformerLens signature fn(activation, hook) -> activation. Every
function here returns a new tensor (never edits in place) in the activation's dtype; the
arithmetic is done in float64 so that closed-form properties hold to float32 rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from loupe.core.massive import MagnitudeStats

HookFn = Callable[[Tensor, Any], Tensor]
HookPlan = list[tuple[str, HookFn]]
Positions = Sequence[int] | None  # None: every position
EditOp = Literal["set", "scale", "zero"]


# -- difference of means ------------------------------------------------------------------------


@dataclass
class MeanAccumulator:
    """Running mean of activations in float64 (sums of many float32 rows lose digits otherwise)."""

    total: Tensor | None = None
    count: int = 0

    def update(self, x: Float[Tensor, n * shape]) -> None:
        s = x.detach().to(torch.float64).sum(0)
        self.total = s if self.total is None else self.total + s
        self.count += int(x.shape[0])

    @property
    def mean(self) -> Tensor:
        if self.total is None or self.count == 0:
            raise ValueError("no rows were accumulated")
        return self.total / self.count


def diff_of_means(pos: Float[Tensor, n * shape], neg: Float[Tensor, m * shape]) -> tuple[Tensor, Tensor, Tensor]:
    """(r, mu_plus, mu_minus) with r = mean(pos) - mean(neg), all float64 (Arditi et al. 2024, eq. 1)."""
    a, b = MeanAccumulator(), MeanAccumulator()
    a.update(pos)
    b.update(neg)
    return a.mean - b.mean, a.mean, b.mean


@torch.no_grad()
def last_position_means(
    forward_with_cache: Callable[[Tensor], dict[str, Tensor]],
    batches: Iterable[tuple[Tensor, Tensor]],
    hook_names: Sequence[str],
    n_positions: int,
    stats: dict[str, MagnitudeStats] | None = None,
) -> dict[str, Float[Tensor, "n_positions d"]]:
    """Mean activation (float64) at each hook over the last `n_positions` tokens of every sequence
    (the post-instruction tokens of a chat prompt). `batches` yields (ids [batch, pos] right-padded,
    lengths [batch]); `forward_with_cache(ids)` returns {hook_name: [batch, pos, d]}. With `stats`,
    each hook's `MagnitudeStats` also sees every real token (all positions, not only the last ones)."""
    acc = {h: MeanAccumulator() for h in hook_names}
    for ids, lengths in batches:
        cache = forward_with_cache(ids)
        idx = lengths[:, None] - n_positions + torch.arange(n_positions)[None, :]  # [batch, n_positions]
        rows = torch.arange(ids.shape[0])[:, None]
        for h in hook_names:
            acc[h].update(cache[h][rows, idx])
            if stats is not None:
                stats.setdefault(h, MagnitudeStats()).update(cache[h], lengths)
    return {h: a.mean for h, a in acc.items()}


# -- scores -------------------------------------------------------------------------------------


def refusal_score(logits: Float[Tensor, "batch d_vocab"], refusal_ids: Sequence[int]) -> Float[Tensor, batch]:
    """log P(refusal) - log(1 - P(refusal)) of the next token, P summed over refusal first tokens
    (Arditi et al. 2024, sec. 3: the refusal metric)."""
    p = torch.softmax(logits.to(torch.float64), -1)[:, list(refusal_ids)].sum(-1)
    eps = 1e-12
    return torch.log(p.clamp_min(eps)) - torch.log((1 - p).clamp_min(eps))


def kl_divergence(
    base_logits: Float[Tensor, "batch d_vocab"], other_logits: Float[Tensor, "batch d_vocab"]
) -> Float[Tensor, batch]:
    """KL(P_base || P_other) of next-token distributions, in nats, per row."""
    lp = torch.log_softmax(base_logits.to(torch.float64), -1)
    lq = torch.log_softmax(other_logits.to(torch.float64), -1)
    return (lp.exp() * (lp - lq)).sum(-1)


@dataclass
class Candidate:
    """One (hook, layer, position) difference-of-means direction and its selection scores."""

    hook: str
    layer: float  # depth in layers: resid_pre of block l is l, resid_post of block l is l + 1
    position: int  # negative: counted from the end of the prompt
    norm: float
    bypass_score: float | None = None  # mean refusal score on harmful prompts under ablation (lower is better)
    induce_score: float | None = None  # mean refusal score on harmless prompts under addition (must be > 0)
    kl: float | None = None  # mean KL on harmless prompts under ablation
    reasons: list[str] = field(default_factory=list)  # why it was filtered out
    selected: bool = False  # passed every filter and won
    kept: bool = False  # no candidate passed: the best within the KL bound, kept flagged (`keep_candidate`)
    massive_share: float = 0.0  # fraction of ||mu+ - mu-||^2 on the massive dimensions (removed from r)

    FIELDS: ClassVar[tuple[str, ...]] = (
        "hook",
        "layer",
        "position",
        "norm",
        "bypass_score",
        "induce_score",
        "kl",
        "reasons",
        "selected",
        "kept",
        "massive_share",
    )

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.FIELDS}


SELECTION_RULES = ("bypass_minus_induce", "bypass")
MAX_DEPTH = 0.8  # Arditi et al.'s bound: a direction from a block at or past 0.8 L is not selected


def select_direction(
    cands: list[Candidate],
    n_layers: int,
    max_kl: float = 0.1,
    max_depth: float = MAX_DEPTH,
    rule: str = "bypass_minus_induce",
) -> Candidate | None:
    """Arditi et al. 2024, sec. 2.4 / appendix C: drop candidates with KL > max_kl, layer >= max_depth * L
    or a non-positive induce score; of the rest the best by `rule` wins. Marks the table.

    rule "bypass" is the paper's: the lowest bypass score. "bypass_minus_induce" (the default) ranks by
    bypass score - induce score, both refusal log-odds: the direction is used both to remove refusal
    (ablation, ACE at alpha 0) and to add it (addition, ACE at alpha 1), and the paper's filter asks only
    induce > 0. On the 3-layer demo model the paper's rule takes blocks.1 (bypass -4.04 vs -3.72 at
    blocks.2) whose addition at alpha 1 makes 82% of harmless prompts refuse and whose ACE at alpha 0
    leaves 27.5% of harmful ones refusing; blocks.2 (induce 4.47 vs 2.33) meets every steering target
    (bench/RESULTS.md)."""
    if rule not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {rule!r}; choose one of {SELECTION_RULES}")

    def objective(bypass: float, induce: float) -> float:
        return bypass - (induce if rule == "bypass_minus_induce" else 0.0)

    best: Candidate | None = None
    best_score = math.inf
    for c in cands:
        c.reasons = []
        c.selected = False
        if c.layer >= max_depth * n_layers:
            c.reasons.append(f"layer >= {max_depth:g} of depth")
        if c.kl is None or not math.isfinite(c.kl) or c.kl > max_kl:
            c.reasons.append(f"KL > {max_kl:g}")
        if c.induce_score is None or not c.induce_score > 0:
            c.reasons.append("induce score <= 0")
        if c.norm == 0:
            c.reasons.append("zero direction")
        if c.bypass_score is None or not math.isfinite(c.bypass_score):
            c.reasons.append("no bypass score")
        if c.reasons or c.bypass_score is None or c.induce_score is None:  # both None cases have reasons
            continue
        score = objective(c.bypass_score, c.induce_score)
        if best is None or score < best_score:
            best, best_score = c, score
    if best is not None:
        best.selected = True
    return best


def keep_candidate(
    cands: list[Candidate],
    n_layers: int,
    max_kl: float = 0.1,
    max_depth: float = MAX_DEPTH,
    rule: str = "bypass_minus_induce",
) -> Candidate | None:
    """When no candidate passes `select_direction`'s filters: the one a caller may keep, flagged as not
    passing, so that its interventions can still be shown. Never one past the KL bound (its ablation
    moves harmless next-token distributions: it breaks the model) nor a zero one; of the rest, those below
    `max_depth` first, then the best by `rule`. None when every candidate is past the KL bound. Marks it."""

    def ok(c: Candidate) -> bool:
        return (
            c.norm > 0
            and c.kl is not None
            and math.isfinite(c.kl)
            and c.kl <= max_kl
            and c.bypass_score is not None
            and math.isfinite(c.bypass_score)
            and c.induce_score is not None
            and math.isfinite(c.induce_score)
        )

    def key(c: Candidate) -> tuple[bool, float]:
        assert c.bypass_score is not None and c.induce_score is not None  # ok() checked both
        return (
            c.layer >= max_depth * n_layers,
            c.bypass_score - (c.induce_score if rule == "bypass_minus_induce" else 0.0),
        )

    pool = [c for c in cands if ok(c)]
    if not pool:
        return None
    best = min(pool, key=key)
    best.kept = True
    return best


# -- hook functions -----------------------------------------------------------------------------


def unit(r: Tensor) -> Tensor:
    r = r.to(torch.float64)
    n = r.norm()
    if not n > 0:
        raise ValueError("the direction is zero")
    out: Tensor = r / n  # Tensor.__truediv__ is typed Any
    return out


def _select(positions: Positions) -> slice | list[int]:
    return slice(None) if positions is None else list(positions)


def _apply(act: Tensor, positions: Positions, f: Callable[[Tensor], Tensor]) -> Tensor:
    """act[..., positions, :] <- f(act[..., positions, :]) in float64; returns a new tensor."""
    if positions is None:  # every position: no copy to write into (this runs at every decoding step)
        return f(act.to(torch.float64)).to(act.dtype)
    out = act.clone()
    sel = _select(positions)
    out[:, sel] = f(act[:, sel].to(torch.float64)).to(act.dtype)
    return out


def ablate(h: Tensor, r_hat: Tensor) -> Tensor:
    """h - (h . r^) r^ (r^ unit, float64)."""
    r_hat = r_hat.to(h.device, torch.float64)
    return h - (h.to(torch.float64) @ r_hat)[..., None] * r_hat


def ablation_hook(r: Tensor, positions: Positions = None) -> HookFn:
    r_hat = unit(r)

    def fn(act: Tensor, hook: Any = None) -> Tensor:
        return _apply(act, positions, lambda h: ablate(h, r_hat))

    return fn


def addition_hook(vec: Tensor, alpha: float = 1.0, positions: Positions = None) -> HookFn:
    """h + alpha r (activation addition; Turner et al. 2023, Arditi et al. 2024)."""
    v = alpha * vec.to(torch.float64)

    def fn(act: Tensor, hook: Any = None) -> Tensor:
        return _apply(act, positions, lambda h: h + v.to(h.device))

    return fn


def ace_hook(r: Tensor, mu_minus: Tensor, alpha: float, positions: Positions = None) -> HookFn:
    """h - ((h - mu-) . r^) r^ + alpha r (Marshall, Scherlis, Belrose 2024): the component along r^
    becomes mu- . r^ + alpha ||r||, the orthogonal component is kept."""
    r64, mu = r.to(torch.float64), mu_minus.to(torch.float64)
    r_hat = unit(r64)

    def f(h: Tensor) -> Tensor:
        d = h.device
        return h - ((h - mu.to(d)) @ r_hat.to(d))[..., None] * r_hat.to(d) + alpha * r64.to(d)

    def fn(act: Tensor, hook: Any = None) -> Tensor:
        return _apply(act, positions, f)

    return fn


def ablation_hook_names(n_layers: int) -> list[str]:
    """Every write into the residual stream (Arditi et al. 2024, sec. 2.3): the embedding (block 0's
    resid_pre), and each block's resid_pre, attention output and MLP output."""
    names = []
    for layer in range(n_layers):
        names += [f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_mlp_out"]
    return names


def ablation_plan(r: Tensor, n_layers: int) -> HookPlan:
    fn = ablation_hook(r)
    return [(name, fn) for name in ablation_hook_names(n_layers)]


# SAE interventions: `encode(x) -> codes` and `w_dec_i` (the decoder row) come from an sae-lens SAE.


def sae_add_hook(w_dec_i: Tensor, value: float, positions: Positions = None) -> HookFn:
    """h + c W_dec[i]."""
    return addition_hook(w_dec_i, value, positions)


def sae_clamp_hook(
    encode: Callable[[Tensor], Tensor], w_dec_i: Tensor, feature: int, value: float, positions: Positions = None
) -> HookFn:
    """h + (c - f_i(h)) W_dec[i]: feature i set to c, the rest of h (the other features and the
    SAE's reconstruction error) unchanged."""
    w = w_dec_i.to(torch.float64)

    def f(h: Tensor) -> Tensor:
        fi = encode(h.to(torch.float32))[..., feature].to(torch.float64)
        return h + (value - fi)[..., None] * w.to(h.device)

    def fn(act: Tensor, hook: Any = None) -> Tensor:
        return _apply(act, positions, f)

    return fn


def _op(x: Tensor, op: EditOp, value: float) -> Tensor:
    if op == "set":
        return torch.full_like(x, value)
    if op == "scale":
        return x * value
    if op == "zero":
        return torch.zeros_like(x)
    raise ValueError(f"unknown edit op {op!r}")


def neuron_edit_hook(index: int, position: int | None, op: EditOp, value: float = 0.0) -> HookFn:
    """Set, scale or zero activation[..., position, index] (position None: every position)."""

    def fn(act: Tensor, hook: Any = None) -> Tensor:
        out = act.clone()
        sel = slice(None) if position is None else position
        out[:, sel, index] = _op(act[:, sel, index].to(torch.float64), op, value).to(act.dtype)
        return out

    return fn


def sae_feature_edit_hook(
    encode: Callable[[Tensor], Tensor],
    w_dec_i: Tensor,
    feature: int,
    position: int | None,
    op: EditOp,
    value: float = 0.0,
) -> HookFn:
    """Set, scale or zero SAE feature i at one position, keeping the reconstruction error:
    h + (f_i' - f_i) W_dec[i] with f_i' = value, f_i * value or 0."""
    w = w_dec_i.to(torch.float64)

    def f(h: Tensor) -> Tensor:
        fi = encode(h.to(torch.float32))[..., feature].to(torch.float64)
        return h + (_op(fi, op, value) - fi)[..., None] * w.to(h.device)

    def fn(act: Tensor, hook: Any = None) -> Tensor:
        return _apply(act, None if position is None else [position], f)

    return fn


def compose(fns: Sequence[HookFn]) -> HookFn:
    """Several hook functions at one hook point, applied in order."""

    def fn(act: Tensor, hook: Any = None) -> Tensor:
        for f in fns:
            act = f(act, hook)
        return act

    return fn
