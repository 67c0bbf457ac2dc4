"""core.steering against closed-form answers."""

import math

import pytest
import torch

from loupe.core import massive as M
from loupe.core import steering as S

torch.manual_seed(0)


def _h(*shape):
    return torch.randn(*shape, dtype=torch.float32)


def test_diff_of_means_of_constructed_data():
    # harmful rows = base + (3, -1) offset; harmless rows = base; means computed by hand
    pos = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, -2.0]])
    neg = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    r, mp, mm = S.diff_of_means(pos, neg)
    assert r.dtype == torch.float64
    assert torch.equal(mp, torch.tensor([3.0, 0.0], dtype=torch.float64))
    assert torch.equal(mm, torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert torch.equal(r, torch.tensor([2.0, -2.0], dtype=torch.float64))


def test_mean_accumulator_is_float64_exact_where_float32_is_not():
    # 2^24 + 1 is not representable in float32; summing in float64 keeps it
    acc = S.MeanAccumulator()
    x = torch.full((4, 1), 2.0**24, dtype=torch.float32)
    acc.update(x)
    acc.update(torch.ones(4, 1))
    assert acc.mean.item() == (4 * 2.0**24 + 4) / 8


def test_ablation_leaves_h_orthogonal_to_r_and_keeps_the_rest():
    h, r = _h(3, 5, 16), _h(16) * 7
    out = S.ablation_hook(r)(h)
    r_hat = r.double() / r.double().norm()
    assert out.dtype == h.dtype
    assert (out.double() @ r_hat).abs().max() < 1e-5
    # the orthogonal component is unchanged
    orth = h.double() - (h.double() @ r_hat)[..., None] * r_hat
    assert torch.allclose(out.double(), orth, atol=1e-5)


def test_ablation_is_idempotent_and_respects_positions():
    h, r = _h(2, 4, 8), _h(8)
    f = S.ablation_hook(r, positions=[1, -1])
    out = f(h)
    assert torch.equal(out[:, [0, 2]], h[:, [0, 2]])
    assert torch.allclose(f(out), out, atol=1e-6)


def test_addition_adds_alpha_r():
    h, r = _h(2, 3, 8), _h(8)
    out = S.addition_hook(r, alpha=2.5)(h)
    assert torch.allclose(out, h + 2.5 * r, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, -1.0])
def test_ace_sets_the_projection_and_keeps_the_orthogonal_part(alpha):
    h, r, mu_minus = _h(2, 6, 12), _h(12) * 3, _h(12)
    out = S.ace_hook(r, mu_minus, alpha)(h).double()
    r64 = r.double()
    r_hat = r64 / r64.norm()
    expected = mu_minus.double() @ r_hat + alpha * r64.norm()  # mu-.r^ + alpha ||r||
    assert torch.allclose(out @ r_hat, expected.expand(2, 6), atol=1e-5)
    orth = lambda x: x - (x @ r_hat)[..., None] * r_hat  # noqa: E731
    assert torch.allclose(orth(out), orth(h.double()), atol=1e-5)


def test_ace_at_alpha_zero_puts_every_input_at_the_harmless_mean_projection():
    r, mu_minus = torch.tensor([2.0, 0.0]), torch.tensor([0.5, 9.0])
    h = torch.tensor([[[10.0, 1.0], [-4.0, 3.0]]])
    out = S.ace_hook(r, mu_minus, 0.0)(h)
    # r^ = e0: the first coordinate becomes mu-[0] = 0.5, the second is kept
    assert torch.equal(out, torch.tensor([[[0.5, 1.0], [0.5, 3.0]]]))


class LinearSAE:
    """encode(x) = x @ W_enc + b_enc, no nonlinearity: clamping has a closed form."""

    def __init__(self, d_in, d_sae):
        self.W_enc = torch.randn(d_in, d_sae)
        self.b_enc = torch.randn(d_sae)
        self.W_dec = torch.randn(d_sae, d_in) / math.sqrt(d_in)

    def encode(self, x):
        return x @ self.W_enc + self.b_enc


def test_sae_add_adds_c_times_the_decoder_row():
    sae = LinearSAE(8, 20)
    h = _h(1, 4, 8)
    out = S.sae_add_hook(sae.W_dec[3], 1.5)(h)
    assert torch.allclose(out, h + 1.5 * sae.W_dec[3], atol=1e-6)


def test_clamp_to_current_value_changes_nothing():
    sae = LinearSAE(8, 20)
    h = _h(1, 1, 8)
    current = float(sae.encode(h)[0, 0, 5])
    out = S.sae_clamp_hook(sae.encode, sae.W_dec[5], 5, current)(h)
    assert torch.allclose(out, h, atol=1e-5)


def test_clamp_sets_the_reencoded_feature_when_the_sae_is_linear():
    sae = LinearSAE(8, 20)
    h = _h(2, 3, 8)
    i, c = 7, 4.0
    out = S.sae_clamp_hook(sae.encode, sae.W_dec[i], i, c)(h)
    # linear encoder: f_i(h + d w) = f_i(h) + d (w . W_enc[:, i]); the hook uses d = c - f_i(h)
    gain = float(sae.W_dec[i] @ sae.W_enc[:, i])
    f_before = sae.encode(h)[..., i]
    assert torch.allclose(sae.encode(out)[..., i], f_before + (c - f_before) * gain, atol=1e-4)
    # and out - h is exactly along W_dec[i] with coefficient c - f_i(h)
    assert torch.allclose(out - h, (c - f_before)[..., None] * sae.W_dec[i], atol=1e-5)


def test_neuron_edit_set_scale_zero_at_one_position():
    h = _h(1, 4, 6)
    out = S.neuron_edit_hook(2, 1, "set", 9.0)(h)
    assert out[0, 1, 2] == 9.0
    mask = torch.ones_like(h, dtype=torch.bool)
    mask[0, 1, 2] = False
    assert torch.equal(out[mask], h[mask])
    assert torch.allclose(S.neuron_edit_hook(2, 1, "scale", 3.0)(h)[0, 1, 2], 3 * h[0, 1, 2])
    assert S.neuron_edit_hook(0, -1, "zero")(h)[0, 3, 0] == 0.0


def test_sae_feature_edit_zero_removes_the_feature_contribution():
    sae = LinearSAE(8, 20)
    h = _h(1, 3, 8)
    out = S.sae_feature_edit_hook(sae.encode, sae.W_dec[4], 4, 2, "zero")(h)
    f = sae.encode(h)[0, 2, 4]
    assert torch.allclose(out[0, 2], h[0, 2] - f * sae.W_dec[4], atol=1e-5)
    assert torch.equal(out[0, :2], h[0, :2])


def test_refusal_score_is_the_log_odds_of_refusal_tokens():
    # two refusal tokens of probability 0.2 and 0.3 -> p = 0.5 -> log-odds 0
    probs = torch.tensor([[0.2, 0.3, 0.4, 0.1]], dtype=torch.float64)
    s = S.refusal_score(probs.log(), [0, 1])
    assert abs(float(s)) < 1e-9
    s2 = S.refusal_score(probs.log(), [2])
    assert abs(float(s2) - math.log(0.4 / 0.6)) < 1e-9


def test_kl_is_zero_for_equal_and_matches_hand_value():
    p = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    q = torch.tensor([[0.9, 0.1]], dtype=torch.float64)
    assert float(S.kl_divergence(p.log(), p.log())) == 0.0
    want = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert abs(float(S.kl_divergence(p.log(), q.log())) - want) < 1e-9


def test_selection_filters_and_picks_the_lowest_bypass_score():
    C = S.Candidate
    cands = [
        C("a", 0, -1, 1.0, bypass_score=-5.0, induce_score=1.0, kl=0.5),  # KL too high
        C("b", 1, -1, 1.0, bypass_score=-3.0, induce_score=2.0, kl=0.05),
        C("c", 1, -2, 1.0, bypass_score=-4.0, induce_score=-1.0, kl=0.05),  # does not induce
        C("d", 2, -1, 1.0, bypass_score=-9.0, induce_score=3.0, kl=0.0),  # too deep (2 >= 0.8 * 2)
        C("e", 0, -3, 1.0, bypass_score=-1.0, induce_score=0.5, kl=0.01),
    ]
    best = S.select_direction(cands, n_layers=2, rule="bypass")
    assert best.hook == "b" and best.selected
    assert [c.selected for c in cands] == [False, True, False, False, False]
    assert cands[0].reasons == ["KL > 0.1"] and cands[3].reasons == ["layer >= 0.8 of depth"]


def test_default_selection_weighs_the_induce_score():
    C = S.Candidate
    cands = [
        C("b1", 1, -1, 1.0, bypass_score=-4.0, induce_score=2.3, kl=0.05),
        C("b2", 2, -1, 1.0, bypass_score=-3.7, induce_score=4.5, kl=0.05),
        C("x", 1, -2, 1.0, bypass_score=-9.0, induce_score=9.0, kl=0.5),
    ]  # KL too high
    assert S.select_direction(cands, n_layers=3).hook == "b2"  # -8.2 < -6.3
    assert [c.selected for c in cands] == [False, True, False]
    assert S.select_direction(cands, n_layers=3, rule="bypass").hook == "b1"
    with pytest.raises(ValueError):
        S.select_direction(cands, n_layers=3, rule="induce")


def test_ablation_plan_covers_every_residual_write():
    names = S.ablation_hook_names(2)
    assert names == [
        "blocks.0.hook_resid_pre",
        "blocks.0.hook_attn_out",
        "blocks.0.hook_mlp_out",
        "blocks.1.hook_resid_pre",
        "blocks.1.hook_attn_out",
        "blocks.1.hook_mlp_out",
    ]


def test_keeping_a_candidate_never_takes_one_past_the_kl_bound():
    C = S.Candidate
    cands = [
        C("deep-best", 3, -1, 1.0, bypass_score=-9.0, induce_score=-0.5, kl=0.01),  # too deep: only if nothing else
        C("breaks", 1, -1, 1.0, bypass_score=-20.0, induce_score=5.0, kl=6.4),  # best scores, model-breaking
        C("safe", 1, -2, 1.0, bypass_score=-2.0, induce_score=-1.0, kl=0.09),
        C("zero", 1, -3, 0.0, bypass_score=None, induce_score=None, kl=None),
    ]
    assert S.select_direction(cands, n_layers=3) is None  # nothing induces refusal but "breaks", past the KL bound
    kept = S.keep_candidate(cands, n_layers=3)
    assert kept is not None and kept.hook == "safe" and kept.kept and not kept.selected
    assert [c.kept for c in cands] == [False, False, True, False]
    cands = [c for c in cands if c.hook != "safe"]
    for c in cands:
        c.kept = False
    assert S.keep_candidate(cands, n_layers=3).hook == "deep-best"  # below the KL bound, though too deep
    assert S.keep_candidate([c for c in cands if c.hook in ("breaks", "zero")], n_layers=3) is None


def test_massive_dimensions_are_found_left_out_of_the_direction_and_ablation_keeps_them():
    """Sun et al. 2024: a planted massive activation (5,000 on dimension 3 at the first token, as at an
    attention sink) is found; padding is not a token (9,999 on dimension 7 past a row's end is ignored);
    the direction without it has r[3] = 0, so ablation leaves h[..., 3] exactly as it was, while ablating
    the raw direction moves it by hundreds."""
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 5, 16, generator=g)
    h[:, 0, 3] = 5000.0
    h[1, 4, 7] = 9999.0  # row 1 has 3 real tokens: position 4 is padding
    lengths = torch.tensor([5, 3])
    st = M.MagnitudeStats()
    st.update(h, lengths)
    real = torch.cat([h[0], h[1, :3]]).abs()
    assert st.median == pytest.approx(float(real.median()))
    assert st.peak[3] == 5000.0 and st.peak[7] < 100
    assert M.massive_dims(st) == [3]
    assert M.massive_dims(st, minimum=6000.0) == []  # not larger than the absolute bar
    raw = torch.randn(16, generator=g, dtype=torch.float64)
    raw[3] = 40.0  # the direction's largest coordinate is the massive one
    r = M.without_dims(raw, [3])
    assert r[3] == 0 and torch.equal(r[torch.arange(16) != 3], raw[torch.arange(16) != 3])
    rows = M.without_dims(torch.stack([raw, 2 * raw]), [3])  # one direction per position: each row's dimension 3
    assert torch.equal(rows, torch.stack([r, 2 * r]))
    out = S.ablation_hook(r)(h)
    assert torch.equal(out[..., 3], h[..., 3])
    assert (out.double() @ S.unit(r)).abs().max() < 1e-3  # still ablated along r
    moved = S.ablation_hook(raw)(h)
    assert (moved[:, 0, 3] - h[:, 0, 3]).abs().min() > 100
    ace = S.ace_hook(r, torch.zeros(16), alpha=2.0)(h)
    assert torch.equal(ace[..., 3], h[..., 3])


def test_means_feed_the_magnitude_stats_with_every_real_token():
    ids = torch.zeros(2, 4, dtype=torch.long)
    acts = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)

    def fwd(_ids):
        return {"h": acts}

    stats: dict[str, M.MagnitudeStats] = {}
    means = S.last_position_means(fwd, [(ids, torch.tensor([4, 2]))], ["h"], 1, stats=stats)
    assert torch.equal(means["h"][0], ((acts[0, 3] + acts[1, 1]) / 2).double())
    assert torch.equal(stats["h"].peak, acts[1, 1].double())  # not 18-23: row 1's padding (positions 2, 3)


def test_candidate_hooks_every_nth_layer_and_the_last_resid_post():
    from loupe.services.steering.direction import candidate_hooks

    every = candidate_hooks(4)
    assert [d for _, d in every] == [0, 1, 2, 3, 4] and every[-1][0] == "blocks.3.hook_resid_post"
    third = candidate_hooks(30, 3)
    assert [d for _, d in third] == [*range(0, 30, 3), 30] and third[0][0] == "blocks.0.hook_resid_pre"


def test_candidate_hooks_dense_from_every_block_up_to_the_selection_bound():
    from loupe.services.steering.direction import candidate_hooks

    got = [d for _, d in candidate_hooks(30, 3, dense_from=0.4)]
    # every third block, every block from 12 up to 23 (24 = 0.8 x 30 is past the bound), the resid_post
    assert got == [0, 3, 6, 9, *range(12, 24), 24, 27, 30]
    assert candidate_hooks(30, 3, dense_from=None) == candidate_hooks(30, 3)
