"""Dashboard statistics against dense, hand-computed answers."""

from __future__ import annotations

import math

import torch

from loupe.core import sae_dashboards as D


def _codes(dense: torch.Tensor, batch: int = 3) -> D.SparseCodes:
    return D.encode_sparse(lambda x: x, dense.split(batch), dense.shape[1])


def _random_dense(n=40, f=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, f, generator=g)
    return torch.where(torch.rand(n, f, generator=g) < 0.4, x, torch.zeros_like(x))


def test_stats_and_top_k_match_dense():
    dense = _random_dense()
    codes = _codes(dense)
    s = D.feature_stats(codes)
    fires = dense > 0
    assert torch.equal(s["count"], fires.sum(0))
    assert torch.allclose(s["density"].float(), fires.float().mean(0))
    assert torch.allclose(s["max"], dense.max(0).values)
    mean = dense.sum(0) / fires.sum(0).clamp(min=1)
    assert torch.allclose(s["mean"], mean, atol=1e-6)
    tv, ti = dense.T.topk(4, dim=1)
    # dense_elements 6: one padded column, so nearly every feature takes the per-segment path
    for budget in (1 << 24, 6):
        rows, vals = D.top_k(codes, 4, dense_elements=budget)
        for f in range(dense.shape[1]):
            n = int(fires[:, f].sum())
            assert torch.allclose(vals[f, : min(n, 4)], tv[f, : min(n, 4)])
            assert torch.equal(dense[rows[f, : min(n, 4)], f], vals[f, : min(n, 4)])
            assert (rows[f, min(n, 4) :] == -1).all()


def test_codes_are_sorted_by_feature_then_row_and_sort_int64_is_a_stable_argsort():
    codes = _codes(_random_dense(n=200, f=9, seed=3), batch=7)
    key = codes.features * codes.n_rows + codes.rows
    assert bool((key[1:] > key[:-1]).all())
    x = torch.randint(0, 50, (1000,), generator=torch.Generator().manual_seed(1))
    assert torch.equal(D.sort_int64(x), torch.sort(x, stable=True).indices)
    big = torch.tensor([2**62, 5, 2**62, 1])  # too wide to pack: torch's stable sort
    assert D.sort_int64(big).tolist() == [3, 1, 0, 2]


def test_interval_samples_draw_uniformly_without_replacement():
    dense = torch.zeros(10, 1)
    dense[:, 0] = torch.linspace(0.91, 1.0, 10)  # all ten in the top bin of 10
    codes = _codes(dense)
    mx = D.feature_stats(codes)["max"]
    seen = torch.zeros(10)
    for seed in range(300):
        rows, _ = D.interval_samples(codes, mx, 10, per_bin=2, generator=torch.Generator().manual_seed(seed))
        got = rows[0, 9].tolist()
        assert len(set(got)) == 2 and all(0 <= r < 10 for r in got)
        assert (rows[0, :9] == -1).all()
        seen[got] += 1
    assert seen.sum() == 600 and seen.min() > 30 and seen.max() < 90  # expected 60 each


def test_histogram_intervals_and_lookup():
    dense = torch.zeros(10, 2)
    dense[:, 0] = torch.tensor([0.0, 0.1, 0.2, 0.35, 0.5, 0.55, 0.9, 1.0, 0.0, 0.05])
    dense[3, 1] = 2.0
    codes = _codes(dense)
    mx = D.feature_stats(codes)["max"]
    h = D.histograms(codes, mx, 4)
    # feature 0, bins of width 0.25 over (0, 1]: {0.1, 0.2, 0.05}, {}, {0.5, 0.55}, {0.9, 1.0}  (0.35 -> bin 1)
    assert h[0].tolist() == [3, 1, 2, 2]
    assert h[1].tolist() == [0, 0, 0, 1]
    rows, shares = D.interval_samples(codes, mx, 4, per_bin=5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(shares[0], torch.tensor([3, 1, 2, 2]) / 8)
    for b in range(4):
        got = sorted(r for r in rows[0, b].tolist() if r >= 0)
        want = sorted(int(i) for i in torch.nonzero((dense[:, 0] > 0) & ((dense[:, 0] * 4).long().clamp(max=3) == b)))
        assert got == want
    feats = torch.tensor([[0, 0, 1], [1, 0, 1]])
    rws = torch.tensor([[4, 8, 3], [2, -1, 9]])
    got = D.lookup(codes, feats, rws)
    assert got.tolist() == [[0.5, 0.0, 2.0], [0.0, 0.0, 0.0]]


def test_context_windows():
    input_ids = torch.arange(20).view(2, 10)
    # cache rows: sequence 0 positions 0..9 -> rows 0..9, sequence 1 positions 0..4 -> rows 10..14
    row_seq = torch.tensor([0] * 10 + [1] * 5)
    row_pos = torch.tensor(list(range(10)) + list(range(5)))
    row_index = torch.full((2, 10), -1)
    row_index[0] = torch.arange(10)
    row_index[1, :5] = torch.arange(10, 15)
    toks, wrows = D.context_windows(torch.tensor([1, 13, -1]), row_seq, row_pos, row_index, input_ids, 2, 2)
    assert toks[0].tolist() == [-1, 0, 1, 2, 3]
    assert wrows[0].tolist() == [-1, 0, 1, 2, 3]
    assert toks[1].tolist() == [11, 12, 13, 14, 15]
    assert wrows[1].tolist() == [11, 12, 13, 14, -1]  # position 5 of sequence 1 is not cached
    assert (toks[2] == -1).all() and (wrows[2] == -1).all()


def test_enrichment_and_shares():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 3])
    dense = torch.zeros(10, 2)
    dense[[6, 7, 8], 0] = 1.0  # feature 0 fires only on label 2 (base rate 0.3)
    dense[[0, 1, 4], 1] = torch.tensor([1.0, 1.0, 2.0])  # feature 1: mass 2 on label 0, 2 on label 1
    codes = _codes(dense)
    lab, p, lift = D.enrichment(codes, labels, 4, k=2, min_count=1)
    assert (
        lab[0].tolist() == [2, -1]
        and math.isclose(p[0, 0].item(), 1.0)
        and math.isclose(lift[0, 0].item(), 1 / 0.3, rel_tol=1e-5)
    )
    # label 1: p 0.5, base 0.2 -> 0.5 log 2.5 beats label 0: p 0.5, base 0.4 -> 0.5 log 1.25
    assert lab[1].tolist() == [1, 0]
    sh = D.label_shares(codes, labels, 4)
    assert torch.allclose(sh[1], torch.tensor([0.5, 0.5, 0.0, 0.0]))


def test_capacity_closed_forms():
    assert torch.allclose(D.capacity(torch.eye(3)), torch.ones(3))
    W = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 2.0]])
    assert torch.allclose(D.capacity(W), torch.tensor([0.5, 0.5, 1.0]))
    th = 0.7  # two unit vectors at angle th: C = 1 / (1 + cos^2 th)
    W = torch.tensor([[1.0, 0.0], [math.cos(th), math.sin(th)]])
    assert torch.allclose(D.capacity(W), torch.full((2,), 1 / (1 + math.cos(th) ** 2)))


def test_participation_ratio_and_neighbours():
    loads = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    assert torch.allclose(D.participation_ratio(loads), torch.tensor([1.0, 3.0, 0.0]))
    W = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    idx, cos = D.nearest_by_cosine(W, 3, block=16)
    Wn = torch.nn.functional.normalize(W, dim=1)
    C = Wn @ Wn.T
    C.fill_diagonal_(-2)
    v, i = C.topk(3, dim=1)
    assert torch.equal(idx, i) and torch.allclose(cos, v, atol=1e-6)


def test_segment_topk_matches_a_sort_within_each_segment():
    g = torch.Generator().manual_seed(5)
    seg = torch.sort(torch.randint(0, 12, (500,), generator=g)).values
    seg = seg[seg != 4]  # an empty segment
    vals = torch.randn(seg.numel(), generator=g, dtype=torch.float64)
    vals[3] = -float("inf")
    for budget in (1 << 24, 12):
        idx, v = D.segment_topk(seg, vals, 12, 6, dense_elements=budget)
        for s_ in range(12):
            mine = torch.nonzero(seg == s_).ravel()
            want = torch.sort(vals[mine], descending=True).values[:6]
            got = v[s_][idx[s_] >= 0]
            assert torch.equal(got, want)
            assert torch.equal(vals[idx[s_][idx[s_] >= 0]], want)
            assert bool((seg[idx[s_][idx[s_] >= 0]] == s_).all())
        assert (idx[4] == -1).all()


def test_sparse_topk_encode_gives_the_dense_nonzeros():
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    from loupe.services.saes.encode import nonzero_codes, sparse_topk

    torch.manual_seed(0)
    sae = TopKSAE(TopKSAEConfig(d_in=16, d_sae=64, k=8, dtype="float32", device="cpu"))
    with torch.no_grad():
        sae.b_enc.fill_(-3.0)  # some of the k largest pre-activations are negative: ReLU drops them
    x = torch.randn(50, 16)
    with torch.no_grad():
        dense = sae.encode(x)
        with sparse_topk(sae):
            r, f, v = nonzero_codes(sae.encode(x))
        assert not sae.encode(x).is_sparse  # switched back on exit
    assert 0 < v.numel() < 50 * 8 and bool((v > 0).all())
    rebuilt = torch.zeros_like(dense)
    rebuilt[r, f] = v
    assert torch.equal(rebuilt, dense)
    a = D.encode_sparse(lambda b: b, [dense[:20], dense[20:]], 64)
    with sparse_topk(sae), torch.no_grad():
        b = D.encode_sparse(lambda b: nonzero_codes(sae.encode(b)), [x[:20], x[20:]], 64)
    assert torch.equal(a.values, b.values) and torch.equal(a.features, b.features)
    assert torch.equal(D.top_k(a, 5)[1], D.top_k(b, 5)[1])


def test_splice_json_merges_two_objects():
    import orjson

    from loupe.services.saes.pages import splice_json

    a, b = {"x": 1, "s": "}{"}, {"y": [1, {"z": 2}]}
    assert orjson.loads(splice_json(orjson.dumps(a), orjson.dumps(b))) == {**a, **b}
    assert orjson.loads(splice_json(b"{}", orjson.dumps(b))) == b
    assert orjson.loads(splice_json(orjson.dumps(a), b"{}")) == a


def test_top_bottom_of_a_product_in_row_chunks_equals_the_whole_product():
    from loupe.core.sae_dashboards import top_bottom, top_bottom_of_product

    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(37, 8, generator=g), torch.randn(8, 50, generator=g)
    whole = top_bottom(A @ B, 5)
    for rows in (1, 10, 37, 100):
        for got, want in zip(top_bottom_of_product(A, B, 5, rows=rows), whole):
            torch.testing.assert_close(got, want)
    ti, tv, bi, bv = whole
    M = A @ B
    assert torch.equal(tv[:, 0], M.max(1).values) and torch.equal(bv[:, 0], M.min(1).values)


def test_top_k_reduce_of_any_parts_equals_the_top_k_of_all():
    """The dashboards' reduce: each part's top-k candidates, merged, give each feature's top k of
    everything, ranked by (value descending, row ascending), ties included, whatever the parts."""
    g = torch.Generator().manual_seed(3)
    n, d_sae, k = 400, 7, 5
    rows = torch.arange(n).repeat_interleave(2)
    feats = torch.randint(0, d_sae, (2 * n,), generator=g)
    vals = torch.randint(1, 6, (2 * n,), generator=g).float()  # few distinct values: many ties
    # brute force: sort each feature's entries by (-value, row), keep k
    want_rows = torch.full((d_sae, k), -1, dtype=torch.long)
    for f in range(d_sae):
        entries = sorted((-float(v), int(r)) for r, ff, v in zip(rows, feats, vals) if int(ff) == f)[:k]
        want_rows[f, : len(entries)] = torch.tensor([r for _, r in entries])
    got_rows, got_vals = D.top_k_table(feats, rows, vals, d_sae, k)
    assert torch.equal(got_rows, want_rows)
    for cuts in ([0, 800], [0, 1, 2, 800], [0, 123, 456, 457, 800], list(range(0, 801, 50))):
        parts = [D.top_k_candidates(feats[a:b], rows[a:b], vals[a:b], k) for a, b in zip(cuts, cuts[1:])]
        merged = D.top_k_table(*(torch.cat([p[i] for p in parts]) for i in range(3)), d_sae, k)
        assert torch.equal(merged[0], want_rows) and torch.equal(merged[1], got_vals)
    # without ties it is the top k of the codes (D.top_k), values and rows
    vals = torch.rand(2 * n, generator=g) + 0.1
    codes = D.encode_sparse(lambda x: x, [torch.zeros(n, d_sae).index_put_((rows, feats), vals)], d_sae)
    r1, v1 = D.top_k(codes, k)
    r2, v2 = D.top_k_table(codes.features, codes.rows, codes.values, d_sae, k)
    assert torch.equal(r1, r2) and torch.equal(v1, v2)
