"""The 2-bit packed cache: the quantiser's distortion against Max's closed form, the popcount loop
against the unpacked values, and ranking quality against exact inner products."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loupe.core import influence as I
from loupe.core import packed as P


def test_gaussian_rows_have_the_lloyd_max_distortion():
    torch.manual_seed(0)
    w = torch.randn(200, 4 * P.BLOCK) * torch.rand(200, 1) * 5  # rows of different scales
    dq = P.unpack_rows(P.pack_rows(w))
    nmse = float(((dq - w) ** 2).sum() / (w**2).sum())
    # Max (1960): 0.1175 for N(0, 1) at 4 levels; the per-block RMS is estimated from 128 values and
    # the scale refitted, which moves it by a few percent
    assert nmse == pytest.approx(P.LLOYD_MSE, rel=0.05)
    # every value is one of the four levels times its block's scale
    levels = (dq.reshape(200, -1, P.BLOCK) / torch.from_numpy(P.pack_rows(w).scale)[..., None]).abs()
    assert torch.allclose(levels, torch.where(levels > 1, 1.5104, 0.4528), atol=1e-4)


def test_popcount_scores_equal_the_unpacked_inner_products():
    torch.manual_seed(1)
    dim = 3 * P.BLOCK + 37  # padding inside the last block
    w = torch.randn(50, dim) * torch.linspace(0.1, 3, dim)
    q = torch.randn(dim) * torch.linspace(3, 0.1, dim)
    p, pq = P.pack_rows(w), P.pack_query(q)
    want = P.unpack_rows(p) @ P.unpack_query(pq)
    got = P.scores(p, pq)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    rows = torch.tensor([7, 0, 49, 7])
    assert torch.allclose(P.scores(p, pq, rows), want[rows], rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    # the query keeps 15 levels per block
    qd = P.unpack_query(pq)
    s = qd.reshape(-1)[: 3 * P.BLOCK].reshape(3, P.BLOCK).abs().amax(1) / P.QUERY_LEVELS
    assert torch.allclose(
        qd[: 3 * P.BLOCK].reshape(3, P.BLOCK) / s[:, None],
        torch.round(qd[: 3 * P.BLOCK].reshape(3, P.BLOCK) / s[:, None]),
        atol=1e-3,
    )
    with pytest.raises(ValueError):
        P.scores(p, P.pack_query(torch.randn(dim + 1)))


def test_round_trip_through_tensors_and_concat():
    w = torch.randn(9, 2 * P.BLOCK)
    p = P.pack_rows(w)
    back = P.from_tensors(P.to_tensors(p), p.dim)
    both = P.concat([back, P.pack_rows(w[:2])])
    assert both.n == 11 and np.array_equal(both.h[:9], p.h) and np.array_equal(both.l[9:], p.l[:2])


def test_ranking_of_weak_correlations_survives_two_bits():
    """Scores that are small correlations spread over every coordinate (as influence scores are):
    2 bits per coordinate keep the ranking far better than keeping a fifth of the coordinates exactly."""
    torch.manual_seed(2)
    n, dim = 400, 20 * P.BLOCK
    q = torch.randn(dim)
    w = torch.randn(n, dim) + 0.02 * torch.randn(n, 1) * q  # a weak shared direction
    exact = w @ q
    packed = P.scores(P.pack_rows(w), P.pack_query(q))
    kept = torch.randperm(dim)[: dim // 5]
    assert I.spearman(packed, exact) > 0.9
    assert I.spearman(packed, exact) > I.spearman(w[:, kept] @ q[kept], exact) + 0.2


def test_scores_from_several_threads_at_once():
    from concurrent.futures import ThreadPoolExecutor

    torch.manual_seed(3)
    p = P.pack_rows(torch.randn(300, 4 * P.BLOCK))
    qs = [P.pack_query(torch.randn(4 * P.BLOCK)) for _ in range(8)]
    want = [P.scores(p, q) for q in qs]
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda q: P.scores(p, q), qs))
    assert all(torch.equal(a, b) for a, b in zip(got, want))
