"""Massive activations (Sun, Chen, Kolter, Liu 2024, "Massive Activations in Large Language Models"): a
few residual coordinates, in fixed dimensions at the first token (an attention sink) and some delimiters,
are orders of magnitude larger than the rest; they are near-constant across inputs and act as biases: set
to their mean the model is intact, set to zero it breaks. A steering direction with weight on them makes
directional ablation move them (the projection h . r^ at the sink token is dominated by them), which
breaks the model; so refusal directions leave them out (`massive_dims`, `without_dims`).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor


@dataclass
class MagnitudeStats:
    """Per-dimension peak |activation| over every real token (padding excluded) of a hook, and the median
    |activation| of its hidden states (the median of each batch's median over tokens x dimensions)."""

    peak: Tensor | None = None
    medians: list[float] = field(default_factory=list)

    def update(self, acts: Float[Tensor, "batch pos d"], lengths: Tensor) -> None:
        mask = torch.arange(acts.shape[1])[None, :] < lengths[:, None]
        a = acts.detach()[mask].abs().to(torch.float64)  # [tokens, d]
        if a.numel() == 0:
            return
        peak = a.max(0).values
        self.peak = peak if self.peak is None else torch.maximum(self.peak, peak)
        self.medians.append(float(a.median()))

    @property
    def median(self) -> float:
        return statistics.median(self.medians) if self.medians else 0.0


# Sun et al. 2024, sec. 2, call an activation massive when it is larger than 100 and "at least or about
# 1,000 times larger than the median magnitude of its hidden state" (7B-scale models). Loupe keeps the
# absolute bar and flags coordinates 100 times the median, one order looser: on SmolLM2-135M the coordinates
# between 100x and 1,000x at the attention-sink token (247, 14, 100: 440-970x the median) still break
# directional ablation when left in (blocks.16's last post-instruction token: KL on harmless prompts 1.18
# with nothing left out, 0.17 with 507, 0.15 with 507 and 247, 0.035 with all 17 flagged ones; bench/RESULTS.md).
MASSIVE_RATIO = 100.0
MASSIVE_MIN = 100.0


def massive_dims(stats: MagnitudeStats, ratio: float = MASSIVE_RATIO, minimum: float = MASSIVE_MIN) -> list[int]:
    """The dimensions whose peak |activation| is a massive activation (after Sun et al. 2024; see
    MASSIVE_RATIO): larger than `minimum` and at least `ratio` times the median |activation| of the hook."""
    if stats.peak is None:
        return []
    threshold = max(minimum, ratio * stats.median)
    return [int(i) for i in torch.nonzero(stats.peak > threshold).flatten()]


def without_dims(r: Tensor, dims: Sequence[int]) -> Tensor:
    """r with the coordinates `dims` set to zero (float64). Then r^ = r / ||r|| is zero there too, so
    ablation h - (h . r^) r^, addition h + a r and ACE neither read nor write those coordinates: a
    massive activation stays what the model made it (Sun et al. 2024: it acts as a bias; zeroing or
    moving it breaks the model)."""
    out = r.to(torch.float64).clone()
    if len(dims):
        out[..., list(dims)] = 0.0  # the last dimension: one direction [d], or one per position [n, d]
    return out
