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

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import Tensor


@dataclass
class SparseCodes:
    """Nonzero SAE codes of `n_rows` tokens, sorted by (feature, value descending)."""

    rows: Tensor       # int64 [nnz], token row in the pass
    features: Tensor   # int64 [nnz]
    values: Tensor     # float32 [nnz] (> 0)
    n_rows: int
    d_sae: int

    @property
    def counts(self) -> Tensor:
        return torch.bincount(self.features, minlength=self.d_sae)

    @property
    def starts(self) -> Tensor:
        c = self.counts
        return torch.cumsum(c, 0) - c

    def by_row_key(self) -> tuple[Tensor, Tensor]:
        """(sorted keys feature * n_rows + row, their values): what `lookup` searches, built once."""
        if not hasattr(self, "_by_row"):
            key = self.features * self.n_rows + self.rows
            key_sorted, o = torch.sort(key)
            self._by_row = (key_sorted, self.values[o])
        return self._by_row


def _order_key32(x: Tensor) -> Tensor:
    """float -> int64 in [0, 2^32) ordered as the float32 values are (the IEEE-754 sign-flip trick:
    negative floats get all bits inverted, non-negative ones the sign bit set); NaN maps to 0, below
    -inf."""
    u = x.float().view(torch.int32).long() & 0xFFFFFFFF
    key = torch.where(u >= 0x80000000, (~u) & 0xFFFFFFFF, u | 0x80000000)
    return torch.where(torch.isnan(x), torch.zeros_like(key), key)


def _sort_by_feature_then(features: Tensor, minor: Tensor, descending: bool) -> Tensor:
    """Permutation sorting by feature, then by `minor`: one sort of the int64 key
    feature << 32 | order-preserving 32 bits of float32(minor). One integer sort instead of a two-pass
    lexsort (4x faster than a float64 key on 3.2M codes: 78 ms against 332 ms). Minor values equal in
    float32 may come out in either order; NaN sorts below -inf."""
    if features.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    key = _order_key32(minor)
    if descending:
        key = 0xFFFFFFFF - key
    return torch.sort((features.long() << 32) | key).indices


def _first_k(sizes: Tensor, k: int, n: int) -> tuple[Tensor, Tensor]:
    """Indices [n_segments, k] of the first k entries of each segment of a list of length n laid
    out segment after segment with these `sizes`, and a mask of those that exist."""
    start = torch.cumsum(sizes, 0) - sizes
    j = torch.arange(k)
    ok = j[None, :] < sizes[:, None]
    return (start[:, None] + j[None, :]).clamp(0, max(n - 1, 0)), ok


@torch.no_grad()
def encode_sparse(encode: Callable[[Tensor], Tensor | tuple[Tensor, Tensor, Tensor]], batches: Iterable[Tensor],
                  d_sae: int, progress: Callable[[int], None] | None = None) -> SparseCodes:
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
    o = _sort_by_feature_then(feats_t, vals_t, descending=True)
    return SparseCodes(rows_t[o], feats_t[o], vals_t[o], n, d_sae)


def feature_stats(codes: SparseCodes) -> dict[str, Tensor]:
    """density (share of tokens where the feature fires), max and mean activation when firing."""
    count = codes.counts
    total = torch.zeros(codes.d_sae, dtype=torch.float64).index_add_(0, codes.features, codes.values.double())
    mx = torch.zeros(codes.d_sae)
    has = count > 0
    mx[has] = codes.values[codes.starts[has]]          # sorted descending within each feature
    return {
        "count": count,
        "density": count.double() / max(codes.n_rows, 1),
        "max": mx,
        "mean": torch.where(has, total / count.clamp(min=1), torch.zeros_like(total)).float(),
    }


def top_k(codes: SparseCodes, k: int) -> tuple[Tensor, Tensor]:
    """rows [d_sae, k] (-1 where a feature fired fewer than k times) and values [d_sae, k], highest first."""
    idx, ok = _first_k(codes.counts, k, codes.values.numel())
    if codes.values.numel() == 0:
        return torch.full((codes.d_sae, k), -1, dtype=torch.long), torch.zeros(codes.d_sae, k)
    return torch.where(ok, codes.rows[idx], -1), torch.where(ok, codes.values[idx], 0.0)


def bin_index(codes: SparseCodes, max_act: Tensor, n_bins: int) -> Tensor:
    """Each nonzero's bin among `n_bins` equal bins of (0, max activation of its feature]."""
    m = max_act[codes.features].clamp(min=1e-12)
    return (codes.values / m * n_bins).long().clamp(0, n_bins - 1)


def histograms(codes: SparseCodes, max_act: Tensor, n_bins: int) -> Tensor:
    """Counts [d_sae, n_bins] of each feature's nonzero activations over equal bins of (0, max]."""
    b = bin_index(codes, max_act, n_bins)
    return torch.bincount(codes.features * n_bins + b, minlength=codes.d_sae * n_bins).view(codes.d_sae, n_bins)


def interval_samples(codes: SparseCodes, max_act: Tensor, n_bins: int, per_bin: int,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Neuronpedia-style interval samples: split (0, max] into `n_bins` equal bins and draw up to
    `per_bin` activations uniformly at random inside each. Returns rows [d_sae, n_bins, per_bin]
    (-1 where a bin holds fewer) and each bin's share of the feature's activations [d_sae, n_bins]."""
    b = bin_index(codes, max_act, n_bins)
    group = codes.features * n_bins + b
    n_groups = codes.d_sae * n_bins
    size = torch.bincount(group, minlength=n_groups)
    key = torch.rand(group.numel(), generator=generator)
    o = _sort_by_feature_then(group, key, descending=False)
    idx, ok = _first_k(size, per_bin, group.numel())
    if group.numel() == 0:
        rows = torch.full((n_groups, per_bin), -1, dtype=torch.long)
    else:
        rows = torch.where(ok, codes.rows[o][idx], -1)
    count = codes.counts.clamp(min=1)
    shares = size.view(codes.d_sae, n_bins).double() / count[:, None]
    return rows.view(codes.d_sae, n_bins, per_bin), shares.float()


def lookup(codes: SparseCodes, features: Tensor, rows: Tensor) -> Tensor:
    """Activation of `features` at `rows` (same shape; 0 where the feature did not fire or row < 0)."""
    key_sorted, vals_sorted = codes.by_row_key()
    q = features.long() * codes.n_rows + rows.long().clamp(min=0)
    pos = torch.searchsorted(key_sorted, q.flatten()).clamp(max=max(key_sorted.numel() - 1, 0))
    if key_sorted.numel() == 0:
        return torch.zeros(features.shape)
    hit = (key_sorted[pos] == q.flatten()) & (rows.flatten() >= 0)
    vals = torch.where(hit, vals_sorted[pos], 0.0)
    return vals.view(features.shape)


def context_windows(rows: Tensor, row_seq: Tensor, row_pos: Tensor, row_index: Tensor,
                    input_ids: Tensor, left: int, right: int, pad_id: int = -1) -> tuple[Tensor, Tensor]:
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


def enrichment(codes: SparseCodes, labels: Tensor, n_labels: int, k: int, min_count: int = 2
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
    uniq, inv = torch.unique(key, return_inverse=True)
    mass = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inv, codes.values.double())
    cnt = torch.bincount(inv, minlength=uniq.numel())
    f = uniq // n_labels
    lbl = uniq % n_labels
    total = torch.zeros(codes.d_sae, dtype=torch.float64).index_add_(0, codes.features, codes.values.double())
    p = mass / total[f].clamp(min=1e-30)
    lift = p / base[lbl].clamp(min=1e-30)
    score = torch.where(cnt >= min_count, p * torch.log(lift.clamp(min=1e-30)), torch.tensor(-float("inf"), dtype=torch.float64))
    o = _sort_by_feature_then(f, score, descending=True)
    fs, ls, ps, lifts, ss = f[o], lbl[o], p[o], lift[o], score[o]
    size = torch.bincount(fs, minlength=codes.d_sae)
    if fs.numel() == 0:
        empty = torch.full((codes.d_sae, k), -1, dtype=torch.long)
        return empty, torch.zeros(codes.d_sae, k), torch.zeros(codes.d_sae, k)
    idx, ok = _first_k(size, k, fs.numel())
    ok = ok & torch.isfinite(ss[idx]) & (ss[idx] > 0)
    return (torch.where(ok, ls[idx], -1), torch.where(ok, ps[idx], 0.0).float(), torch.where(ok, lifts[idx], 0.0).float())


def label_shares(codes: SparseCodes, labels: Tensor, n_labels: int) -> Tensor:
    """Share [d_sae, n_labels] of each feature's activation mass on rows of each label."""
    lab = labels.long()[codes.rows]
    m = torch.zeros(codes.d_sae * n_labels, dtype=torch.float64).index_add_(0, codes.features * n_labels + lab,
                                                                           codes.values.double())
    m = m.view(codes.d_sae, n_labels)
    return (m / m.sum(1, keepdim=True).clamp(min=1e-30)).float()


def capacity(W: Tensor) -> Tensor:
    """Scherlis et al. capacity of each row direction of W [n, d]: (W_i.W_i)^2 / sum_j (W_i.W_j)^2."""
    W = W.double()
    G = W @ W.T
    num = torch.diagonal(G) ** 2
    den = (G ** 2).sum(1)
    return torch.where(den > 0, num / den.clamp(min=1e-300), torch.zeros_like(den)).float()


def participation_ratio(loads: Tensor) -> Tensor:
    """Per column of `loads` [n_features, n_units]: (sum a^2)^2 / sum a^4, the effective number of
    features loading on the unit (0 for a unit nothing loads on)."""
    a2 = loads.double() ** 2
    s2 = a2.sum(0)
    s4 = (a2 ** 2).sum(0)
    return torch.where(s4 > 0, s2 ** 2 / s4.clamp(min=1e-300), torch.zeros_like(s2)).float()


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
    bv, bi = (-M).topk(k, dim=1)
    return ti, tv, bi, -bv
