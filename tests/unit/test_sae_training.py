"""The temporal (slowness) loss of the residual SAE (its token pairs and its value) and the automatic label."""

import pytest
import torch

from loupe.services.saes.configs import SAETrainConfig
from loupe.services.saes.training import _pair_batches, make_training_sae


def _sequences(lengths):
    seq = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])
    pos = torch.cat([torch.arange(n) for n in lengths])
    return seq, pos


@pytest.mark.parametrize("gap", [1, 4])
def test_pairs_are_later_tokens_of_the_same_sequence_within_the_gap(gap):
    seq, pos = _sequences([1, 7, 3, 12, 2])  # a one-token sequence has no pair
    acts = torch.arange(seq.numel()).float().unsqueeze(1).repeat(1, 3)  # each row holds its own index
    batches = _pair_batches(acts, seq, pos, batch_size=64, seed=0, gap=gap)
    gaps = set()
    for _ in range(20):
        b = next(batches)
        assert b.shape == (64, 3) and b.dtype == torch.float32
        i, j = b[:32, 0].long(), b[32:, 0].long()
        assert (seq[i] == seq[j]).all()
        d = pos[j] - pos[i]
        assert ((d >= 1) & (d <= gap)).all()
        gaps |= set(d.tolist())
    assert gaps == set(range(1, gap + 1))  # every gap is drawn


def test_pairs_of_one_token_sequences_are_refused_not_drawn_forever():
    seq, pos = _sequences([1, 1, 1])
    with pytest.raises(ValueError, match="two tokens"):
        next(_pair_batches(torch.zeros(3, 2), seq, pos, batch_size=4, seed=0))


def _temporal_sae(coefficient):
    cfg = SAETrainConfig(
        "t",
        "blocks.0.hook_resid_pre",
        "matryoshka",
        expansion=4,
        k=4,
        matryoshka_fractions=(1 / 4,),
        temporal_coefficient=coefficient,
    )
    torch.manual_seed(0)
    return make_training_sae(cfg, d_in=8)


def _forward(sae, x):
    from sae_lens.saes.sae import TrainStepInput

    return sae.training_forward_pass(
        TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=None, n_training_steps=0, is_logging_step=False)
    )


def test_temporal_loss_is_the_squared_change_of_the_first_prefix_codes():
    sae = _temporal_sae(0.5)
    x = torch.randn(16, 8)
    out = _forward(sae, x)
    codes = sae.encode(x)[:, : sae.matryoshka_widths[0]]
    expected = 0.5 * (codes[:8] - codes[8:]).pow(2).sum(-1).mean()
    assert torch.allclose(out.losses["temporal_loss"], expected)
    assert float(expected) > 0
    same = _forward(sae, torch.cat([x[:8], x[:8]]))  # a pair of identical tokens costs nothing
    assert float(same.losses["temporal_loss"]) == 0.0
    assert "temporal_loss" not in _forward(_temporal_sae(0.0), x).losses


def test_the_temporal_loss_needs_the_matryoshka_architecture():
    with pytest.raises(ValueError, match="matryoshka"):
        SAETrainConfig("t", "h", "topk", temporal_coefficient=1.0)
    with pytest.raises(ValueError, match="temporal_gap"):
        SAETrainConfig("t", "h", "matryoshka", temporal_gap=0)
    with pytest.raises(ValueError, match="inner Matryoshka level"):
        SAETrainConfig("t", "h", "matryoshka", matryoshka_fractions=(), temporal_coefficient=1.0)


def test_auto_label_names_a_domain_that_dominates_or_is_strongly_enriched():
    from loupe.services.saes.dashboards import auto_label

    toks = [{"token": "the"}, {"token": "."}, {"token": "ה"}]
    assert auto_label(toks, {"name": "hebrew", "share": 0.42, "lift": 24.2}) == "hebrew: the . ה"
    assert auto_label(toks, {"name": "prose", "share": 0.6, "lift": 2.5}).startswith("prose: ")
    assert auto_label(toks, {"name": "prose", "share": 0.42, "lift": 3.0}) == "the . ה"
    assert auto_label(toks, {"name": "url", "share": 0.2, "lift": 30.0}) == "the . ה"
    assert auto_label([], None) == "(no enriched tokens)"
