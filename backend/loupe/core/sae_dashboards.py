"""Feature dashboards from one streaming pass over cached activations.

The pass encodes every cached token once and keeps the SAE's nonzero codes as a sparse
(row, feature, value) list: with L0 <= 32 that is a few million entries, tens of MB. Everything a
dashboard shows (density, histogram, top-k and interval examples, per-token activations in a
context window, token and domain enrichment) is then exact arithmetic on that list, sorted once,
so no feature needs a pass of its own (the way Neuronpedia's SAEDashboard batches features does).

Weight-based statistics are pure functions of the SAE's and the model's matrices:
- capacity (Scherlis et al. 2022, "Polysemanticity and Capacity in Neural Networks", eq. 2):
  C_i = (W_i . W_i)^2 / sum_j (W_i . W_j)^2 over decoder directions W_i; 1 for a direction
  orthogonal to all others, 1/n for n identical ones;
- per-neuron polysemanticity: the participation ratio (sum_f a_f^2)^2 / sum_f a_f^4 of the decoder
  loads a_f = W_dec[f, n] of live features on neuron n (1 when one feature loads on it, k for k equal);
- logit effects: the feature's direction in the residual stream times W_U (the direct path,
  ignoring the final LayerNorm's scale, as Neuronpedia's logit lists do);
- nearest features by decoder cosine.
All functions take and return CPU tensors; none touches files, SQL or HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor


@dataclass
class SparseCodes:
    """Nonzero SAE codes of `n_rows` tokens, sorted by (feature, row)."""

    rows: Tensor  # int64 [nnz], token row in the pass
    features: Tensor  # int64 [nnz]
    values: Tensor  # float32 [nnz] (> 0)
    n_rows: int
    d_sae: int

    @cached_property
    def counts(self) -> Tensor:
        return torch.bincount(self.features, minlength=self.d_sae)

    @cached_property
    def starts(self) -> Tensor:
        c = self.counts
        return torch.cumsum(c, 0) - c

    @cached_property
    def row_keys(self) -> Tensor:
        """feature * n_rows + row of every code, ascending (the codes' order): what `lookup` searches."""
        return self.features * self.n_rows + self.rows


def sort_int64(key: Tensor) -> Tensor:
    """The permutation sorting non-negative int64 `key` ascending (ties in index order). numpy sorts
    plain int64 values with SIMD (x86-simd-sort), about 5x faster than torch.sort with indices, so
    the index rides in the low bits of each value when the two fit in 63 bits."""
    n = key.numel()
    idx_bits = max(1, (n - 1).bit_length())
    top = int(key.max()) if n else 0
    if n == 0 or top.bit_length() + idx_bits > 63:
        return torch.sort(key, stable=True).indices
    packed = (key << idx_bits) | torch.arange(n)
    return torch.from_numpy(np.sort(packed.numpy())) & ((1 << idx_bits) - 1)


def segment_topk(
    segments: Tensor, values: Tensor, n_segments: int, k: int, dense_elements: int = 1 << 24
) -> tuple[Tensor, Tensor]:
    """Top k of `values` within each segment of a list sorted by `segments` (ids in [0, n_segments)):
    (indices into the list [n_segments, k], -1 where a segment has fewer; values, highest first).

    No sort of the whole list: segments with at most C entries are laid out in a padded
    [n_segments, C] matrix (C: the 90th percentile of the sizes, capped at `dense_elements` in all)
    and take one batched topk; the few larger segments take a topk of their own."""
    n = values.numel()
    out_idx = torch.full((n_segments, k), -1, dtype=torch.long)
    out_val = torch.full((n_segments, k), -float("inf"), dtype=values.dtype)
    if n == 0 or k == 0:
        return out_idx, out_val
    sizes = torch.bincount(segments, minlength=n_segments)
    starts = torch.cumsum(sizes, 0) - sizes
    cap = int(torch.quantile(sizes.double(), 0.9))
    cap = max(1, min(cap, dense_elements // max(n_segments, 1)))
    small = sizes <= cap
    m = small[segments]
    padded = torch.full((n_segments, cap), -float("inf"), dtype=values.dtype)
    padded[segments[m], (torch.arange(n) - starts[segments])[m]] = values[m]
    kk = min(k, cap)
    v, i = padded.topk(kk, dim=1)
    present = i < sizes[:, None]  # padding (-inf) sorts last, so real entries come first
    out_idx[:, :kk] = torch.where(present, starts[:, None] + i, -1)
    out_val[:, :kk] = torch.where(present, v, -float("inf"))
    for g in torch.nonzero(~small).ravel().tolist():
        s0, c = int(starts[g]), int(sizes[g])
        v, i = values[s0 : s0 + c].topk(min(k, c))
        out_idx[g, : v.numel()] = s0 + i
        out_val[g, : v.numel()] = v
    return out_idx, out_val


@torch.no_grad()
def encode_sparse(
    encode: Callable[[Tensor], Tensor | tuple[Tensor, Tensor, Tensor]],
    batches: Iterable[Tensor],
    d_sae: int,
    progress: Callable[[int], None] | None = None,
) -> SparseCodes:
    """One pass: `encode` each batch [b, d_in] -> codes [b, d_sae], keep the nonzeros. `encode` may
    instead return the nonzeros itself as (rows in the batch, features, values > 0)."""
    rows, feats, vals = [], [], []
    n = 0
    for x in batches:
        c = encode(x)
        if isinstance(c, tuple):
            r, f, v = c
        else:
            r, f = torch.nonzero(c > 0, as_tuple=True)
            v = c[r, f]
        rows.append(r + n)
        feats.append(f)
        vals.append(v.float())
        n += x.shape[0]
        if progress:
            progress(n)
    rows_t = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
    feats_t = torch.cat(feats) if feats else torch.zeros(0, dtype=torch.long)
    vals_t = torch.cat(vals) if vals else torch.zeros(0)
    o = sort_int64(feats_t * max(n, 1) + rows_t)
    return SparseCodes(rows_t[o], feats_t[o], vals_t[o], n, d_sae)


def feature_stats(codes: SparseCodes) -> dict[str, Tensor]:
    """density (share of tokens where the feature fires), max and mean activation when firing."""
    count = codes.counts
    total = torch.zeros(codes.d_sae, dtype=torch.float64).index_add_(0, codes.features, codes.values.double())
    mx = torch.zeros(codes.d_sae).scatter_reduce(0, codes.features, codes.values, "amax")
    has = count > 0
    return {
        "count": count,
        "density": count.double() / max(codes.n_rows, 1),
        "max": mx,
        "mean": torch.where(has, total / count.clamp(min=1), torch.zeros_like(total)).float(),
    }


def top_k(codes: SparseCodes, k: int, dense_elements: int = 1 << 24) -> tuple[Tensor, Tensor]:
    """rows [d_sae, k] (-1 where a feature fired fewer than k times) and values [d_sae, k], highest first."""
    idx, v = segment_topk(codes.features, codes.values, codes.d_sae, k, dense_elements)
    ok = idx >= 0
    return torch.where(ok, codes.rows[idx.clamp(min=0)], -1), torch.where(ok, v, 0.0)


def top_k_candidates(features: Tensor, rows: Tensor, values: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The entries that are among their feature's k highest, ranked by (value descending, row
    ascending): a total order, so the top k of a union of parts equals the top k of the parts' own
    top k's, whatever the parts (the reduce of a sharded pass). Returns (features, rows, values) of
    the kept entries, sorted by (feature, rank)."""
    if features.numel() == 0 or k <= 0:
        return features[:0], rows[:0], values[:0]
    o = torch.sort(rows, stable=True).indices
    o = o[torch.sort(values[o], descending=True, stable=True).indices]
    o = o[torch.sort(features[o], stable=True).indices]
    f = features[o]
    first = torch.ones_like(f, dtype=torch.bool)
    first[1:] = f[1:] != f[:-1]
    seg_start = torch.cummax(torch.where(first, torch.arange(f.numel()), 0), 0).values
    keep = o[(torch.arange(f.numel()) - seg_start) < k]
    return features[keep], rows[keep], values[keep]


def top_k_table(features: Tensor, rows: Tensor, values: Tensor, d_sae: int, k: int) -> tuple[Tensor, Tensor]:
    """`top_k_candidates` of everything, as rows [d_sae, k] (-1 where a feature fired fewer than k
    times) and values [d_sae, k], highest first."""
    f, r, v = top_k_candidates(features, rows, values, k)
    out_rows = torch.full((d_sae, k), -1, dtype=torch.long)
    out_vals = torch.zeros((d_sae, k), dtype=values.dtype)
    if f.numel():
        first = torch.ones_like(f, dtype=torch.bool)
        first[1:] = f[1:] != f[:-1]
        seg_start = torch.cummax(torch.where(first, torch.arange(f.numel()), 0), 0).values
        rank = torch.arange(f.numel()) - seg_start
        out_rows[f, rank] = r.long()
        out_vals[f, rank] = v
    return out_rows, out_vals


def bin_index(codes: SparseCodes, max_act: Tensor, n_bins: int) -> Tensor:
    """Each nonzero's bin among `n_bins` equal bins of (0, max activation of its feature]."""
    m = max_act[codes.features].clamp(min=1e-12)
    return (codes.values / m * n_bins).long().clamp(0, n_bins - 1)


def histograms(codes: SparseCodes, max_act: Tensor, n_bins: int) -> Tensor:
    """Counts [d_sae, n_bins] of each feature's nonzero activations over equal bins of (0, max]."""
    b = bin_index(codes, max_act, n_bins)
    return torch.bincount(codes.features * n_bins + b, minlength=codes.d_sae * n_bins).view(codes.d_sae, n_bins)


def interval_samples(
    codes: SparseCodes, max_act: Tensor, n_bins: int, per_bin: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Neuronpedia-style interval samples: split (0, max] into `n_bins` equal bins and draw up to
    `per_bin` activations uniformly at random inside each. Returns rows [d_sae, n_bins, per_bin]
    (-1 where a bin holds fewer) and each bin's share of the feature's activations [d_sae, n_bins]."""
    b = bin_index(codes, max_act, n_bins)
    group = codes.features * n_bins + b
    n_groups = codes.d_sae * n_bins
    size = torch.bincount(group, minlength=n_groups)
    n = group.numel()
    rows = torch.full((n_groups, per_bin), -1, dtype=torch.long)
    if n:
        # sort by (group, random key) and take each group's first per_bin: a uniform draw without
        # replacement (keys that collide fall back to index order); the key is sized so that group,
        # key and index pack into one int64 for sort_int64
        rand_bits = max(8, min(30, 63 - (n - 1).bit_length() - (n_groups - 1).bit_length()))
        key = torch.randint(0, 1 << rand_bits, (n,), generator=generator)
        o = sort_int64((group << rand_bits) | key)
        start = torch.cumsum(size, 0) - size
        j = torch.arange(per_bin)
        ok = j[None, :] < size[:, None]
        pos = (start[:, None] + j[None, :]).clamp(max=n - 1)
        rows = torch.where(ok, codes.rows[o[pos]], -1)
    count = codes.counts.clamp(min=1)
    shares = size.view(codes.d_sae, n_bins).double() / count[:, None]
    return rows.view(codes.d_sae, n_bins, per_bin), shares.float()


def lookup(codes: SparseCodes, features: Tensor, rows: Tensor) -> Tensor:
    """Activation of `features` at `rows` (same shape; 0 where the feature did not fire or row < 0)."""
    key_sorted, vals_sorted = codes.row_keys, codes.values
    q = features.long() * codes.n_rows + rows.long().clamp(min=0)
    pos = torch.searchsorted(key_sorted, q.flatten()).clamp(max=max(key_sorted.numel() - 1, 0))
    if key_sorted.numel() == 0:
        return torch.zeros(features.shape)
    hit = (key_sorted[pos] == q.flatten()) & (rows.flatten() >= 0)
    vals = torch.where(hit, vals_sorted[pos], 0.0)
    return vals.view(features.shape)


def context_windows(
    rows: Tensor,
    row_seq: Tensor,
    row_pos: Tensor,
    row_index: Tensor,
    input_ids: Tensor,
    left: int,
    right: int,
    pad_id: int = -1,
) -> tuple[Tensor, Tensor]:
    """Token ids and cache rows of a window around each example row.

    rows [...]: example rows (-1: none); row_seq/row_pos [n_rows]: where each row sits in `input_ids`
    [n_seq, n_ctx]; row_index [n_seq, n_ctx]: the row of each position (-1 where not cached).
    Returns (token ids [..., left + 1 + right], window rows [..., W]); positions outside the sequence
    or the cache get `pad_id` / -1."""
    offsets = torch.arange(-left, right + 1)
    valid = rows >= 0
    r = rows.clamp(min=0)
    seq = row_seq[r].long()[..., None].expand(*rows.shape, offsets.numel())
    pos = row_pos[r].long()[..., None] + offsets
    n_ctx = input_ids.shape[1]
    inside = (pos >= 0) & (pos < n_ctx) & valid[..., None]
    pos_c = pos.clamp(0, n_ctx - 1)
    toks = torch.where(inside, input_ids[seq, pos_c].long(), pad_id)
    wrows = torch.where(inside, row_index[seq, pos_c].long(), -1)
    return toks, wrows


_DENSE_BINS = 1 << 25  # (feature, label) pairs counted in dense arrays up to this many (2 x 256 MB)


def enrichment(
    codes: SparseCodes, labels: Tensor, n_labels: int, k: int, min_count: int = 2
) -> tuple[Tensor, Tensor, Tensor]:
    """Which labels (tokens or domains of the rows) a feature's activation mass is enriched in.

    p(l | f) = activation mass of f on rows labelled l / f's total mass; p(l) = share of rows
    labelled l. The score p(l | f) log(p(l | f) / p(l)) is l's term in KL(p(.|f) || p), so a label
    ranks high when it is both frequent under f and over-represented. Labels seen fewer than
    `min_count` times under f are skipped. Returns top-k (label ids, p(l|f), lift p(l|f)/p(l)),
    each [d_sae, k], label -1 where fewer than k qualify."""
    row_label = labels.long()
    base = torch.bincount(row_label, minlength=n_labels).double() / max(row_label.numel(), 1)
    lab = row_label[codes.rows]
    key = codes.features * n_labels + lab
    if codes.d_sae * n_labels <= _DENSE_BINS:  # two bincounts instead of torch.unique's sort
        cnt_all = torch.bincount(key, minlength=codes.d_sae * n_labels)
        uniq = torch.nonzero(cnt_all).ravel()
        mass = torch.bincount(key, weights=codes.values.double(), minlength=codes.d_sae * n_labels)[uniq]
        cnt = cnt_all[uniq]
    else:
        uniq, inv = torch.unique(key, return_inverse=True)
        mass = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inv, codes.values.double())
        cnt = torch.bincount(inv, minlength=uniq.numel())
    f = uniq // n_labels
    lbl = uniq % n_labels
    total = torch.zeros(codes.d_sae, dtype=torch.float64).index_add_(0, codes.features, codes.values.double())
    p = mass / total[f].clamp(min=1e-30)
    lift = p / base[lbl].clamp(min=1e-30)
    score = torch.where(
        cnt >= min_count, p * torch.log(lift.clamp(min=1e-30)), torch.tensor(-float("inf"), dtype=torch.float64)
    )
    idx, ss = segment_topk(f, score, codes.d_sae, k)  # uniq is sorted, so f is grouped
    ok = (idx >= 0) & torch.isfinite(ss) & (ss > 0)
    i = idx.clamp(min=0)
    return (torch.where(ok, lbl[i], -1), torch.where(ok, p[i], 0.0).float(), torch.where(ok, lift[i], 0.0).float())


def label_shares(codes: SparseCodes, labels: Tensor, n_labels: int) -> Tensor:
    """Share [d_sae, n_labels] of each feature's activation mass on rows of each label."""
    lab = labels.long()[codes.rows]
    m = torch.zeros(codes.d_sae * n_labels, dtype=torch.float64).index_add_(
        0, codes.features * n_labels + lab, codes.values.double()
    )
    m = m.view(codes.d_sae, n_labels)
    return (m / m.sum(1, keepdim=True).clamp(min=1e-30)).float()


def capacity(W: Tensor) -> Tensor:
    """Scherlis et al. capacity of each row direction of W [n, d]: (W_i.W_i)^2 / sum_j (W_i.W_j)^2."""
    W = W.double()
    G = W @ W.T
    num = torch.diagonal(G) ** 2
    den = (G**2).sum(1)
    return torch.where(den > 0, num / den.clamp(min=1e-300), torch.zeros_like(den)).float()


def participation_ratio(loads: Tensor) -> Tensor:
    """Per column of `loads` [n_features, n_units]: (sum a^2)^2 / sum a^4, the effective number of
    features loading on the unit (0 for a unit nothing loads on)."""
    a2 = loads.double() ** 2
    s2 = a2.sum(0)
    s4 = (a2**2).sum(0)
    return torch.where(s4 > 0, s2**2 / s4.clamp(min=1e-300), torch.zeros_like(s2)).float()


def nearest_by_cosine(W: Tensor, k: int, block: int = 1024) -> tuple[Tensor, Tensor]:
    """For each row of W [n, d], the k other rows of highest cosine: (indices [n, k], cosines [n, k])."""
    Wn = torch.nn.functional.normalize(W.float(), dim=1)
    n = Wn.shape[0]
    k = min(k, n - 1)
    idx, cos = [], []
    for s in range(0, n, block):
        c = Wn[s : s + block] @ Wn.T
        c[torch.arange(c.shape[0]), torch.arange(s, s + c.shape[0])] = -float("inf")
        v, i = c.topk(k, dim=1)
        idx.append(i)
        cos.append(v)
    return torch.cat(idx), torch.cat(cos)


def top_bottom(M: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Top-k and bottom-k entries of each row of M: (top idx, top values, bottom idx, bottom values)."""
    tv, ti = M.topk(k, dim=1)
    bv, bi = M.topk(k, dim=1, largest=False)
    return ti, tv, bi, bv


def top_bottom_of_product(A: Tensor, B: Tensor, k: int, rows: int = 256) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`top_bottom(A @ B, k)` without holding A @ B: `rows` rows of it at a time (a real model's
    d_sae x d_vocab logit table is ~1 GB in float32: 4,608 x 49,152 for SmolLM2)."""
    parts = [top_bottom(A[i : i + rows] @ B, k) for i in range(0, A.shape[0], rows)]
    return (
        torch.cat([p[0] for p in parts]),
        torch.cat([p[1] for p in parts]),
        torch.cat([p[2] for p in parts]),
        torch.cat([p[3] for p in parts]),
    )
