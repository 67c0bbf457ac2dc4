"""Quality measures of a sparse autoencoder, as pure functions of tensors (plus one that runs a
hooked model to splice a reconstruction in).

- fraction of variance unexplained: FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2
- mean L0 (active features per token), dead fraction (never active), dense fraction (> 10%)
- CE loss recovered = (L_zero_ablated - L_spliced) / (L_zero_ablated - L_clean)
- AUROC of each feature as a detector of each class (domain) of tokens, rank-based with ties.

AUROC is written here rather than taken from scikit-learn, which Loupe does not depend on (it
is not installed). It is the Mann-Whitney statistic: with average ranks r over all n scores
(ties share the mean of their ranks), AUROC = (sum of positives' ranks - p(p+1)/2) / (p (n-p)),
which is exactly P(score_pos > score_neg) + 0.5 P(score_pos == score_neg). The sparse variant
computes it for every (feature, class) pair from the nonzero codes alone: a feature's zeros form
one tie group below all its positive activations, so only the active entries need sorting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import torch
from torch import Tensor

from loupe.core.activations import HookedModel

DENSE_THRESHOLD = 0.10  # a feature active on more than this share of tokens is "dense"


# -- reconstruction -------------------------------------------------------------------------


def fvu(x: Tensor, x_hat: Tensor) -> float:
    """Fraction of variance unexplained of x ([n, d]) by x_hat: 0 for a perfect reconstruction,
    1 for predicting the mean of x."""
    x, x_hat = x.double().reshape(-1, x.shape[-1]), x_hat.double().reshape(-1, x.shape[-1])
    err = (x - x_hat).pow(2).sum()
    var = (x - x.mean(0)).pow(2).sum()
    return float(err / var)


@dataclass
class ReconstructionStats:
    """Streaming FVU: accumulates sum ||x - x_hat||^2, sum x and sum ||x||^2 in float64."""

    n: int = 0
    sq_err: float = 0.0
    sq_sum: float = 0.0
    x_sum: Tensor | None = None

    def update(self, x: Tensor, x_hat: Tensor) -> None:
        x, x_hat = x.double().reshape(-1, x.shape[-1]), x_hat.double().reshape(-1, x.shape[-1])
        self.n += x.shape[0]
        self.sq_err += float((x - x_hat).pow(2).sum())
        self.sq_sum += float(x.pow(2).sum())
        s = x.sum(0)
        self.x_sum = s if self.x_sum is None else self.x_sum + s

    @property
    def fvu(self) -> float:
        if self.x_sum is None:
            raise ValueError("no tokens: call update() first")
        # sum ||x - mean||^2 = sum ||x||^2 - n ||mean||^2
        var = self.sq_sum - float(self.x_sum.pow(2).sum()) / self.n
        return self.sq_err / var


# -- sparsity -------------------------------------------------------------------------------


def mean_l0(codes: Tensor) -> float:
    """Mean number of active (nonzero) features per token of codes [n, d_sae]."""
    return float((codes != 0).sum(-1).double().mean())


def firing_fraction(codes: Tensor) -> Tensor:
    """Share of tokens on which each feature is active: [d_sae]."""
    return (codes != 0).double().mean(0)


def dead_fraction(firing: Tensor) -> float:
    """Share of features never active (firing fraction or firing count == 0)."""
    return float((firing == 0).double().mean())


def dense_fraction(firing_frac: Tensor, threshold: float = DENSE_THRESHOLD) -> float:
    """Share of features active on more than `threshold` of the tokens."""
    return float((firing_frac > threshold).double().mean())


@dataclass
class SparsityStats:
    """Streaming L0 and per-feature firing counts."""

    d_sae: int
    n: int = 0
    active: float = 0.0
    counts: Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.counts is None:
            self.counts = torch.zeros(self.d_sae, dtype=torch.float64)

    def update(self, codes: Tensor) -> None:
        nz = codes.reshape(-1, codes.shape[-1]) != 0
        self.n += nz.shape[0]
        self.active += float(nz.sum())
        self.counts += nz.sum(0).double().cpu()

    @property
    def l0(self) -> float:
        return self.active / self.n

    @property
    def firing(self) -> Tensor:
        return self.counts / self.n


# -- CE loss recovered ------------------------------------------------------------------------


def ce_loss_recovered(clean: float, spliced: float, zero_ablated: float) -> float:
    """(L_zero - L_spliced) / (L_zero - L_clean): 1 when splicing changes nothing, 0 when it is
    as bad as zero-ablating the hook."""
    return (zero_ablated - spliced) / (zero_ablated - clean)


def _next_token_nll(logits: Tensor, input_ids: Tensor, loss_mask: Tensor) -> tuple[float, int]:
    """Summed next-token NLL over positions t >= 1 with loss_mask[t] (the token predicted at t-1)."""
    lp = torch.log_softmax(logits[:, :-1].float(), -1)
    nll = -lp.gather(-1, input_ids[:, 1:, None].to(lp.device)).squeeze(-1)
    m = loss_mask[:, 1:].to(nll.device)
    return float(nll[m].double().sum()), int(m.sum())


def _logits(out: Any) -> Tensor:
    """A Hugging Face output's logits, or a HookedTransformer's (the tensor itself)."""
    logits: Tensor = out.logits if hasattr(out, "logits") else out
    return logits


MAX_LOGITS = 1 << 25  # logits per forward in spliced_losses (float32: 128 MB)


@torch.no_grad()
def spliced_losses(
    model: HookedModel,
    input_ids: Tensor,  # Int[Tensor, "n_seq pos"]
    loss_mask: Tensor,  # Bool[Tensor, "n_seq pos"]
    hook_name: str,
    reconstruct: Callable[[Tensor], Tensor],
    batch_size: int = 32,
    from_position: int = 0,
) -> dict[str, float]:
    """Mean next-token loss of the clean model, with the activation at `hook_name` replaced by
    `reconstruct(activation)` (at every position from `from_position` on; the earlier ones keep the
    clean activation), and with it replaced by zeros there; plus the CE loss recovered. `model` is any
    hooked model (TransformerBridge, HookedTransformer)."""
    if hook_name not in model.hook_dict:
        raise KeyError(f"unknown hook name {hook_name!r}")
    device = getattr(getattr(model, "cfg", None), "device", None)
    d_vocab = getattr(getattr(model, "cfg", None), "d_vocab", None)
    if d_vocab:  # a batch's logits (and their log-softmax) stay near 128 MB: 5 sequences of SmolLM2, not 32
        batch_size = max(1, min(batch_size, MAX_LOGITS // (input_ids.shape[1] * int(d_vocab))))
    sums = {"clean": 0.0, "spliced": 0.0, "zero_ablated": 0.0}
    n = 0

    def splice(x: Tensor, hook: Any = None) -> Tensor:
        out = x.clone()
        out[:, from_position:] = reconstruct(x[:, from_position:]).to(x.dtype)
        return out

    def zero(x: Tensor, hook: Any = None) -> Tensor:
        out = x.clone()
        out[:, from_position:] = 0
        return out

    for s in range(0, input_ids.shape[0], batch_size):
        x = input_ids[s : s + batch_size]
        m = loss_mask[s : s + batch_size]
        if device is not None:
            x = x.to(device)
        total, count = _next_token_nll(_logits(model(x)), x, m)
        sums["clean"] += total
        for name, fn in (("spliced", splice), ("zero_ablated", zero)):
            with model.hooks(fwd_hooks=[(hook_name, fn)]):
                sums[name] += _next_token_nll(_logits(model(x)), x, m)[0]
        n += count
    out = {k: v / n for k, v in sums.items()}
    out["ce_loss_recovered"] = ce_loss_recovered(out["clean"], out["spliced"], out["zero_ablated"])
    out["tokens"] = n
    return out


# -- AUROC ----------------------------------------------------------------------------------


def average_ranks(x: Tensor) -> Tensor:
    """1-based ranks of a 1-D tensor, tied values sharing the mean of their ranks (float64)."""
    x = x.reshape(-1)
    n = x.numel()
    sorted_x, order = torch.sort(x, stable=True)
    idx = torch.arange(n, dtype=torch.float64)
    new_group = torch.ones(n, dtype=torch.bool)
    new_group[1:] = sorted_x[1:] != sorted_x[:-1]
    group = torch.cumsum(new_group.long(), 0) - 1
    n_groups = int(group[-1]) + 1 if n else 0
    first = torch.zeros(n_groups, dtype=torch.float64).scatter_reduce(0, group, idx, "amin", include_self=False)
    last = torch.zeros(n_groups, dtype=torch.float64).scatter_reduce(0, group, idx, "amax", include_self=False)
    ranks_sorted = (first[group] + last[group]) / 2 + 1
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[order] = ranks_sorted
    return ranks


def auroc(scores: Tensor, labels: Tensor) -> float:
    """AUROC of `scores` as a detector of `labels` (bool): 1 for a perfect separator, 0 for a
    perfectly reversed one, 0.5 when all scores tie. NaN when one class is empty."""
    labels = labels.reshape(-1).bool()
    p = int(labels.sum())
    q = labels.numel() - p
    if p == 0 or q == 0:
        return float("nan")
    r = average_ranks(scores.reshape(-1))
    return float((r[labels].sum() - p * (p + 1) / 2) / (p * q))


def sparse_auroc(
    token: Tensor,  # Int[Tensor, "nnz"]: token index of each nonzero code
    feature: Tensor,  # Int[Tensor, "nnz"]: feature index of each nonzero code
    value: Tensor,  # Float[Tensor, "nnz"]: the code (> 0)
    labels: Tensor,  # Int[Tensor, "n_tokens"]: class of each token, in [0, n_classes)
    n_features: int,
    n_classes: int,
) -> Tensor:
    """AUROC of every feature as a one-vs-rest detector of every class: [n_features, n_classes]
    (NaN for a class with no tokens, or with all of them).

    Codes are nonnegative (ReLU, TopK, JumpReLU SAEs) and only the nonzero ones are given: the
    zeros of a feature tie below all of its positive values, so a feature with z zeros gives
    them the average rank (z + 1) / 2 and its k-th smallest positive value the rank z + k (ties
    among positive values averaged too)."""
    if value.numel() and float(value.min()) <= 0:
        raise ValueError("sparse_auroc expects only the positive codes")
    labels = labels.reshape(-1).long()
    n = labels.numel()
    n_class = torch.bincount(labels, minlength=n_classes).double()  # [C]
    token, feature = token.long(), feature.long()
    value = value.double()

    # sort by (feature, value): stable sort by value, then stable sort by feature
    o = torch.sort(value, stable=True).indices
    o = o[torch.sort(feature[o], stable=True).indices]
    f, v, t = feature[o], value[o], token[o]
    nnz = f.numel()
    n_active = torch.bincount(f, minlength=n_features).double()  # [F]
    n_zero = n - n_active
    start = torch.cumsum(n_active, 0) - n_active  # first entry of each feature
    pos = torch.arange(nnz, dtype=torch.float64) - start[f]  # 0-based within feature
    # tie groups of equal (feature, value): average their positions
    new_group = torch.ones(nnz, dtype=torch.bool)
    if nnz:
        new_group[1:] = (f[1:] != f[:-1]) | (v[1:] != v[:-1])
    group = torch.cumsum(new_group.long(), 0) - 1
    n_groups = int(group[-1]) + 1 if nnz else 0
    g_first = torch.zeros(n_groups, dtype=torch.float64).scatter_reduce(0, group, pos, "amin", include_self=False)
    g_last = torch.zeros(n_groups, dtype=torch.float64).scatter_reduce(0, group, pos, "amax", include_self=False)
    rank = n_zero[f] + (g_first[group] + g_last[group]) / 2 + 1  # 1-based, over all n tokens

    cls = labels[t]
    rank_sum = torch.zeros(n_features * n_classes, dtype=torch.float64)
    rank_sum.index_add_(0, f * n_classes + cls, rank)
    active_in = torch.zeros(n_features * n_classes, dtype=torch.float64)
    active_in.index_add_(0, f * n_classes + cls, torch.ones_like(rank))
    rank_sum, active_in = rank_sum.view(n_features, n_classes), active_in.view(n_features, n_classes)
    rank_sum += (n_class[None, :] - active_in) * ((n_zero + 1) / 2)[:, None]  # the tied zeros
    p = n_class[None, :]
    return (rank_sum - p * (p + 1) / 2) / (p * (n - p))


def nonzero_codes(codes: Tensor, offset: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """(token, feature, value) of the positive entries of codes [n, d_sae]; token indices start
    at `offset` (for accumulating over batches)."""
    tok, feat = torch.nonzero(codes > 0, as_tuple=True)
    return (tok + offset).int(), feat.int(), codes[tok, feat].float()


class BestFeature(TypedDict):
    feature: int
    auroc: float


def best_features(auroc_matrix: Tensor, class_names: Sequence[str]) -> dict[str, BestFeature]:
    """For each class with a defined AUROC: its best feature and that feature's AUROC."""
    out: dict[str, BestFeature] = {}
    for c, name in enumerate(class_names):
        col = auroc_matrix[:, c]
        if torch.isnan(col).all():
            continue
        i = int(torch.nan_to_num(col, nan=-1.0).argmax())
        out[name] = {"feature": i, "auroc": float(col[i])}
    return out
