"""Model diffing in pure torch: what changed between a fine-tuned model and its parent.

- weights: the relative Frobenius change ||W_child - W_parent||_F / ||W_parent||_F of every parameter
  tensor, and per layer the same ratio over all of that layer's tensors together;
- activations: on the same tokens, per hook, the mean over tokens of the relative L2 change
  ||h_child - h_parent|| / ||h_parent|| and of cos(h_parent, h_child);
- SAE features (an SAE trained on the parent, applied to both models' activations): each feature's mean
  activation and firing frequency on parent and child, their change, and a standardized change
  (Cohen's d: the change of means over the pooled standard deviation);
- directions: the cosine between two directions (e.g. the parent's and the child's refusal direction)
  at each layer.

Everything is accumulated in float64 (sums over many float32 rows lose digits otherwise), so identical
models give exact zeros and unit cosines.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

# the block index in a Hugging Face parameter name: GPT-NeoX `gpt_neox.layers.3.`, Llama `model.layers.3.`,
# GPT-2 `transformer.h.3.`, BERT-like `encoder.layer.3.`, TransformerLens `blocks.3.`
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|layer|blocks)\.(\d+)\.")

EPS = 1e-12


def layer_of(name: str) -> int | None:
    """The block a parameter belongs to (`model.layers.3.mlp.up_proj.weight` -> 3); None outside the
    blocks (embeddings, final norm, unembedding)."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


# -- weights ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamChange:
    name: str
    layer: int | None
    shape: tuple[int, ...]
    norm: float  # ||W_parent||_F
    diff_norm: float  # ||W_child - W_parent||_F

    @property
    def relative(self) -> float:
        """||W_child - W_parent||_F / ||W_parent||_F (0 when neither has any weight; inf for a change of a zero tensor)."""
        if self.norm > 0:
            return self.diff_norm / self.norm
        return 0.0 if self.diff_norm == 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layer": self.layer,
            "shape": list(self.shape),
            "norm": self.norm,
            "diff_norm": self.diff_norm,
            "relative": self.relative,
        }


def weight_changes(parent: Mapping[str, Tensor], child: Mapping[str, Tensor]) -> list[ParamChange]:
    """The relative Frobenius change of every parameter tensor, in the parent's order. The two must have
    the same parameter names and shapes (a ValueError says which differ)."""
    missing, extra = sorted(set(parent) - set(child)), sorted(set(child) - set(parent))
    if missing or extra:
        raise ValueError(
            f"the models have different parameters: only the parent has {missing[:5]}, only the child {extra[:5]}"
        )
    out = []
    for name, p in parent.items():
        c = child[name]
        if tuple(p.shape) != tuple(c.shape):
            raise ValueError(
                f"parameter {name} has shape {tuple(p.shape)} in the parent, {tuple(c.shape)} in the child"
            )
        p64, c64 = p.detach().to(torch.float64), c.detach().to(torch.float64)
        out.append(
            ParamChange(
                name=name,
                layer=layer_of(name),
                shape=tuple(p.shape),
                norm=float(p64.norm()),
                diff_norm=float((c64 - p64).norm()),
            )
        )
    return out


def layer_weight_change(changes: list[ParamChange], n_layers: int) -> dict[str, Any]:
    """Per block: ||dW||_F / ||W||_F over all of its tensors together (sqrt(sum ||dW_i||^2 / sum ||W_i||^2)),
    its most changed tensor; and the same for the tensors outside the blocks (`outside`)."""

    def group(cs: list[ParamChange]) -> dict[str, Any]:
        num, den = sum(c.diff_norm**2 for c in cs), sum(c.norm**2 for c in cs)
        top = max(cs, key=lambda c: c.relative, default=None)
        rel = math.sqrt(num / den) if den > 0 else (0.0 if num == 0 else math.inf)
        return {
            "relative": rel,
            "diff_norm": math.sqrt(num),
            "norm": math.sqrt(den),
            "n_params": len(cs),
            "top_param": top.name if top is not None and top.relative > 0 else None,
            "top_relative": top.relative if top is not None else 0.0,
        }

    layers = [group([c for c in changes if c.layer == layer]) for layer in range(n_layers)]
    return {"layers": layers, "outside": group([c for c in changes if c.layer is None or c.layer >= n_layers])}


# -- activations --------------------------------------------------------------------------------


@dataclass
class _HookSums:
    relative: float = 0.0
    cosine: float = 0.0
    diff_sq: float = 0.0
    parent_sq: float = 0.0
    n: int = 0


@dataclass
class ActivationDiff:
    """Running per-hook comparison of the two models' activations on the same tokens."""

    sums: dict[str, _HookSums] = field(default_factory=dict)

    def update(self, hook: str, parent: Float[Tensor, "n d"], child: Float[Tensor, "n d"]) -> None:
        """Add tokens (rows: the same token in both models)."""
        if parent.shape != child.shape:
            raise ValueError(f"{hook}: parent activations {tuple(parent.shape)}, child {tuple(child.shape)}")
        p = parent.detach().to(torch.float64).reshape(parent.shape[0], -1)
        c = child.detach().to(torch.float64).reshape(child.shape[0], -1)
        pn, cn, dn = p.norm(dim=1), c.norm(dim=1), (c - p).norm(dim=1)
        s = self.sums.setdefault(hook, _HookSums())
        s.relative += float((dn / pn.clamp_min(EPS)).sum())
        s.cosine += float(((p * c).sum(1) / (pn * cn).clamp_min(EPS)).sum())
        s.diff_sq += float(dn.pow(2).sum())
        s.parent_sq += float(pn.pow(2).sum())
        s.n += int(p.shape[0])

    def result(self) -> dict[str, dict[str, float]]:
        """Per hook: `relative_l2` (mean over tokens of ||h_c - h_p|| / ||h_p||), `cosine` (mean of
        cos(h_p, h_c)), `pooled_relative` (sqrt(sum ||h_c - h_p||^2 / sum ||h_p||^2), less swayed by
        tokens of small norm) and `n_tokens`."""
        return {
            h: {
                "relative_l2": s.relative / s.n if s.n else 0.0,
                "cosine": s.cosine / s.n if s.n else 1.0,
                "pooled_relative": math.sqrt(s.diff_sq / s.parent_sq) if s.parent_sq > 0 else 0.0,
                "n_tokens": s.n,
            }
            for h, s in self.sums.items()
        }


# -- SAE features -------------------------------------------------------------------------------


@dataclass
class FeatureStats:
    """Per-feature activation statistics of one model's codes."""

    total: Tensor | None = None  # sum of activations [d_sae], float64
    squares: Tensor | None = None  # sum of squared activations
    fired: Tensor | None = None  # tokens on which the feature is > 0
    n: int = 0

    def update(self, codes: Float[Tensor, "n d_sae"]) -> None:
        x = codes.detach().to(torch.float64)
        t, q, f = x.sum(0), x.pow(2).sum(0), (x > 0).sum(0).to(torch.float64)
        if self.total is None or self.squares is None or self.fired is None:
            self.total, self.squares, self.fired = t, q, f
        else:
            self.total, self.squares, self.fired = self.total + t, self.squares + q, self.fired + f
        self.n += int(x.shape[0])

    def mean(self) -> Tensor:
        assert self.total is not None and self.n > 0, "no codes were accumulated"
        return self.total / self.n

    def frequency(self) -> Tensor:
        assert self.fired is not None and self.n > 0, "no codes were accumulated"
        return self.fired / self.n

    def variance(self) -> Tensor:
        assert self.squares is not None and self.n > 0, "no codes were accumulated"
        return (self.squares / self.n - self.mean().pow(2)).clamp_min(0.0)


def feature_changes(parent: FeatureStats, child: FeatureStats) -> dict[str, Tensor]:
    """Per feature (float64 [d_sae]): `mean_parent`, `mean_child`, `freq_parent`, `freq_child`,
    `delta_mean`, `delta_freq`, and `standardized` = delta_mean / sqrt((var_parent + var_child) / 2)
    (Cohen's d; 0 where the feature never varies on either model)."""
    mp, mc = parent.mean(), child.mean()
    pooled = ((parent.variance() + child.variance()) / 2).sqrt()
    delta = mc - mp
    standardized = torch.where(pooled > EPS, delta / pooled.clamp_min(EPS), torch.zeros_like(delta))
    return {
        "mean_parent": mp,
        "mean_child": mc,
        "freq_parent": parent.frequency(),
        "freq_child": child.frequency(),
        "delta_mean": delta,
        "delta_freq": child.frequency() - parent.frequency(),
        "standardized": standardized,
    }


RANKINGS = ("delta_mean", "standardized", "delta_freq")


def top_features(changes: Mapping[str, Tensor], k: int, by: str = "delta_mean") -> list[int]:
    """The `k` features whose `by` (one of RANKINGS) changed most in absolute value, largest first
    (ties: the lower index first); features with no change are left out."""
    if by not in RANKINGS:
        raise ValueError(f"rank by one of {RANKINGS}, not {by!r}")
    score = changes[by].abs().tolist()
    order = sorted(range(len(score)), key=lambda i: (-score[i], i))
    return [i for i in order[:k] if score[i] > 0]


# -- directions ---------------------------------------------------------------------------------


def direction_cosines(a: Float[Tensor, "*batch d"], b: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch"]:
    """cos(a, b) along the last dimension (float64); NaN where either direction is zero."""
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    na, nb = a64.norm(dim=-1), b64.norm(dim=-1)
    cos = (a64 * b64).sum(-1) / (na * nb)
    return torch.where((na > 0) & (nb > 0), cos, torch.full_like(cos, math.nan))
