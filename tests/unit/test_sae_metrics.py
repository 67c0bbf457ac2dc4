"""SAE quality measures against answers known in closed form."""

import math

import pytest
import torch
from torch import nn
from transformer_lens.hook_points import HookPoint
from transformer_lens.HookedRootModule import HookedRootModule

from loupe.core.activations import cache_activations, hook_layer
from loupe.core.sae_metrics import (
    ReconstructionStats,
    SparsityStats,
    auroc,
    average_ranks,
    best_features,
    ce_loss_recovered,
    dead_fraction,
    dense_fraction,
    firing_fraction,
    fvu,
    mean_l0,
    nonzero_codes,
    sparse_auroc,
    spliced_losses,
)

# -- FVU ------------------------------------------------------------------------------------


def test_fvu_of_perfect_reconstruction_is_zero_and_of_the_mean_is_one():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(200, 6, generator=g) * 3 + 1).double()
    assert fvu(x, x) == 0.0
    assert fvu(x, x.mean(0).expand_as(x)) == pytest.approx(1.0, abs=1e-12)
    # half the deviation from the mean left unexplained: FVU = 1/4
    half = x.mean(0) + (x - x.mean(0)) / 2
    assert fvu(x, half) == pytest.approx(0.25, abs=1e-12)


def test_streaming_fvu_matches_the_one_shot_value():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 5, generator=g) + 4
    x_hat = x + 0.3 * torch.randn(300, 5, generator=g)
    s = ReconstructionStats()
    for i in range(0, 300, 64):
        s.update(x[i : i + 64], x_hat[i : i + 64])
    assert s.fvu == pytest.approx(fvu(x, x_hat), rel=1e-9)


# -- sparsity -------------------------------------------------------------------------------


def test_l0_dead_and_dense_on_constructed_codes():
    n = 100
    codes = torch.zeros(n, 5)
    codes[:, 0] = 1.0  # active on every token: dense
    codes[:20, 1] = 2.0  # 20%: dense
    codes[:10, 2] = 0.5  # exactly 10%: not dense (> 10% is)
    codes[:1, 3] = 3.0  # 1%
    # feature 4 never active: dead
    assert mean_l0(codes) == pytest.approx((100 + 20 + 10 + 1) / 100)
    frac = firing_fraction(codes)
    assert frac.tolist() == pytest.approx([1.0, 0.2, 0.1, 0.01, 0.0])
    assert dead_fraction(frac) == pytest.approx(1 / 5)
    assert dense_fraction(frac) == pytest.approx(2 / 5)
    s = SparsityStats(d_sae=5)
    for i in range(0, n, 30):
        s.update(codes[i : i + 30])
    assert s.l0 == pytest.approx(mean_l0(codes))
    assert s.firing.tolist() == pytest.approx(frac.tolist())


# -- AUROC ----------------------------------------------------------------------------------


def test_average_ranks_share_ties():
    assert average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0, 3.0])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]
    assert average_ranks(torch.tensor([0.0, 0.0])).tolist() == [1.5, 1.5]


def test_auroc_closed_forms():
    labels = torch.tensor([0, 0, 0, 1, 1], dtype=torch.bool)
    assert auroc(torch.tensor([0.1, 0.2, 0.3, 0.8, 0.9]), labels) == 1.0  # perfect separator
    assert auroc(torch.tensor([0.9, 0.8, 0.7, 0.2, 0.1]), labels) == 0.0  # reversed
    assert auroc(torch.zeros(5), labels) == 0.5  # all tied
    # one positive tied with one negative, the other above all: (1 + 0.5 + 3 * 1 ... ) by hand:
    # pairs (pos, neg): pos=0.5 vs negs {0.1, 0.5, 0.9} -> 1 + 0.5 + 0; pos=1.0 vs all -> 3
    assert auroc(torch.tensor([0.1, 0.5, 0.9, 0.5, 1.0]), labels) == pytest.approx(4.5 / 6)
    assert math.isnan(auroc(torch.ones(3), torch.zeros(3, dtype=torch.bool)))


def test_sparse_auroc_matches_dense_auroc_with_ties():
    g = torch.Generator().manual_seed(2)
    n, n_feat, n_cls = 400, 7, 4
    labels = torch.randint(0, n_cls, (n,), generator=g)
    # sparse nonnegative codes with many exact ties (quantised values) and a class-linked feature
    codes = torch.randint(0, 4, (n, n_feat), generator=g).float() * (torch.rand(n, n_feat, generator=g) < 0.3)
    codes[:, 0] = (labels == 2).float() * 5  # perfect detector of class 2
    t, f, v = nonzero_codes(codes)
    m = sparse_auroc(t, f, v, labels, n_feat, n_cls)
    assert m.shape == (n_feat, n_cls)
    for j in range(n_feat):
        for c in range(n_cls):
            assert m[j, c].item() == pytest.approx(auroc(codes[:, j], labels == c), abs=1e-12)
    assert m[0, 2].item() == 1.0
    best = best_features(m, ["a", "b", "c", "d"])
    assert best["c"] == {"feature": 0, "auroc": 1.0}


def test_sparse_auroc_of_a_never_active_feature_is_one_half_and_empty_class_is_nan():
    labels = torch.tensor([0, 0, 1, 1])
    m = sparse_auroc(torch.tensor([2, 3]), torch.tensor([0, 0]), torch.tensor([1.0, 2.0]), labels, 2, 3)
    assert m[0, 1].item() == 1.0 and m[0, 0].item() == 0.0
    assert m[1, 0].item() == 0.5 and m[1, 1].item() == 0.5
    assert torch.isnan(m[:, 2]).all()
    with pytest.raises(ValueError):
        sparse_auroc(torch.tensor([0]), torch.tensor([0]), torch.tensor([0.0]), labels, 1, 2)


# -- CE loss recovered ----------------------------------------------------------------------


class Toy(HookedRootModule):
    """embed -> hook_mid -> tanh -> unembed: zero-ablating hook_mid leaves logits = the bias."""

    def __init__(self, vocab: int = 11, d: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab, d)
        self.hook_mid = HookPoint()
        self.hook_late = HookPoint()
        self.unembed = nn.Linear(d, vocab)
        self.late_calls = 0
        self.setup()

    def forward(self, ids):
        h = torch.tanh(self.hook_mid(self.embed(ids)))
        self.late_calls += 1
        return self.unembed(self.hook_late(h))


def test_ce_loss_recovered_formula():
    assert ce_loss_recovered(clean=2.0, spliced=2.0, zero_ablated=5.0) == 1.0
    assert ce_loss_recovered(clean=2.0, spliced=5.0, zero_ablated=5.0) == 0.0
    assert ce_loss_recovered(clean=2.0, spliced=3.0, zero_ablated=6.0) == 0.75


def test_splicing_identity_recovers_everything_and_zeros_nothing():
    model = Toy()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 11, (6, 9), generator=g)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, 5:] = False  # padding is not counted
    ident = spliced_losses(model, ids, mask, "hook_mid", lambda x: x, batch_size=4)
    assert ident["spliced"] == pytest.approx(ident["clean"], abs=1e-12)
    assert ident["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-12)
    assert ident["tokens"] == 6 * 8 - 4
    zeros = spliced_losses(model, ids, mask, "hook_mid", torch.zeros_like, batch_size=4)
    assert zeros["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-12)
    # the zero-ablated loss in closed form: logits are the unembedding bias at every position
    lp = torch.log_softmax(model.unembed.bias.detach().double(), -1)
    targets = ids[:, 1:][mask[:, 1:]]
    assert zeros["zero_ablated"] == pytest.approx(float(-lp[targets].mean()), rel=1e-6)


def test_splicing_from_position_one_keeps_the_first_position_clean():
    # the Toy model is position-wise: the prediction made at position 0 (of token 1) keeps its clean
    # loss, every later one falls to the unembedding bias, in closed form
    model = Toy()
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 11, (5, 7), generator=g)
    mask = torch.ones_like(ids, dtype=torch.bool)
    got = spliced_losses(model, ids, mask, "hook_mid", torch.zeros_like, batch_size=2, from_position=1)
    with torch.no_grad():
        clean_lp = torch.log_softmax(model(ids).double(), -1)
    bias_lp = torch.log_softmax(model.unembed.bias.detach().double(), -1)
    first = -clean_lp[:, 0].gather(1, ids[:, 1:2]).squeeze(1)
    later = -bias_lp[ids[:, 2:]]
    want = (first.sum() + later.sum()) / (first.numel() + later.numel())
    assert got["zero_ablated"] == pytest.approx(float(want), rel=1e-6)
    assert got["spliced"] == pytest.approx(got["zero_ablated"], abs=1e-12)
    everywhere = spliced_losses(model, ids, mask, "hook_mid", torch.zeros_like, batch_size=2)
    assert everywhere["zero_ablated"] != pytest.approx(got["zero_ablated"], abs=1e-6)


def test_cache_activations_stops_after_the_last_needed_hook():
    model = Toy()
    ids = torch.randint(0, 11, (2, 5))
    model.late_calls = 0
    got = cache_activations(model, ids, ["hook_mid"])
    assert got["hook_mid"].shape == (2, 5, 8)
    assert model.late_calls == 0  # the forward never got past it
    full = cache_activations(model, ids, ["hook_mid", "hook_late"], stop_early=False)
    assert torch.equal(full["hook_mid"], got["hook_mid"])
    with pytest.raises(KeyError):
        cache_activations(model, ids, ["blocks.9.hook_nope"])
    assert hook_layer("blocks.12.mlp.hook_post") == 12 and hook_layer("ln_final.hook_normalized") is None


def test_real_positions_keep_or_drop_the_first_position():
    from loupe.services.activations import real_positions

    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 0, 0]], dtype=torch.bool)
    assert real_positions(mask).tolist() == [[True, True, True, False], [True, True, False, False]]
    assert real_positions(mask, first_position=False).tolist() == mask.tolist()
