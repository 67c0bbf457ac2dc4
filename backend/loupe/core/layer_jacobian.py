"""Per-token layer Jacobians of a language model (pure torch; the caller supplies the hooked forward).

For a prompt, a position p and two hook points (an earlier activation x = h_in[p] and a later one
y = h_out[p]), the Jacobian dy/dx holding every other position's earlier activation fixed. In a causal
LM y also depends on h_in at positions < p (through attention); this is the same-position block only.
Its SVD dy/dx = U S V^T: v_i are the input directions the later activation is most sensitive to and
u_i the output directions they map to; u_i are read out through the unembedding (top tokens) and an
SAE's decoder (top features by cosine).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def jacobian(fn: Callable[[Tensor], Tensor], x0: Tensor) -> Tensor:
    """d fn / d x at x0, shape (d_out, d_in): reverse mode, all output rows at once
    (``torch.autograd.functional.jacobian(vectorize=True)``: one forward, a vmapped backward).
    Reverse mode touches none of forward AD's process-global state, so it runs beside a training
    Jacobian without ``loupe.core.autodiff.FORWARD_AD`` (strategy="forward-mode" would need it)."""
    # one tensor in, one tensor out: one Tensor back (the stub says Any, for the tuple cases)
    J: Tensor = torch.autograd.functional.jacobian(fn, x0.detach(), vectorize=True, strategy="reverse-mode")
    return J


def top_tokens(direction: Tensor, W_U: Tensor, k: int = 8) -> tuple[list[int], list[float]]:
    """Token ids whose unembedding column has the largest dot product with `direction` (logit lens on
    a direction, without the final LayerNorm)."""
    logits = direction.to(W_U.dtype) @ W_U
    vals, idx = logits.topk(k)
    return idx.tolist(), vals.tolist()


def top_features(direction: Tensor, W_dec: Tensor, k: int = 8) -> tuple[list[int], list[float]]:
    """SAE features whose decoder direction has the largest cosine with `direction` (W_dec: d_sae x d_in)."""
    d = direction.to(W_dec.dtype)
    cos = (W_dec @ d) / (W_dec.norm(dim=1).clamp_min(1e-12) * d.norm().clamp_min(1e-12))
    vals, idx = cos.topk(k)
    return idx.tolist(), vals.tolist()
