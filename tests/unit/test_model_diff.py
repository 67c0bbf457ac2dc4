"""core.model_diff against closed-form answers: identical models give zeros, a known perturbation of one
matrix gives its exact relative norm in its own layer only, hand-computed activation and feature
statistics, and the cosine of a planted direction."""

import math

import pytest
import torch

from loupe.core import model_diff as D


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "model.embed_tokens.weight": torch.randn(10, 4, generator=g),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(4, 4, generator=g),
        "model.layers.0.mlp.up_proj.weight": torch.randn(8, 4, generator=g),
        "model.layers.1.self_attn.q_proj.weight": torch.randn(4, 4, generator=g),
        "model.layers.1.mlp.up_proj.weight": torch.randn(8, 4, generator=g),
        "model.norm.weight": torch.ones(4),
    }


def test_layer_of_reads_the_block_index_of_each_family():
    assert D.layer_of("gpt_neox.layers.2.attention.dense.weight") == 2
    assert D.layer_of("model.layers.11.mlp.down_proj.weight") == 11
    assert D.layer_of("transformer.h.0.attn.c_attn.weight") == 0
    assert D.layer_of("blocks.3.mlp.W_in") == 3
    assert D.layer_of("model.embed_tokens.weight") is None
    assert D.layer_of("lm_head.weight") is None
    assert D.layer_of("transformer.ln_f.weight") is None


def test_identical_models_have_zero_weight_change():
    p = _params()
    changes = D.weight_changes(p, {k: v.clone() for k, v in p.items()})
    assert [c.relative for c in changes] == [0.0] * len(p)
    per = D.layer_weight_change(changes, 2)
    assert [g["relative"] for g in per["layers"]] == [0.0, 0.0]
    assert per["outside"]["relative"] == 0.0 and per["layers"][0]["top_param"] is None


def test_a_known_perturbation_of_one_matrix_gives_its_exact_relative_norm_in_its_layer():
    p = _params()
    p["model.layers.1.mlp.up_proj.weight"] = torch.eye(8, 4) * 3.0  # ||W||_F = 3 * 2 = 6
    c = {k: v.clone() for k, v in p.items()}
    delta = torch.zeros(8, 4)
    delta[5, 2], delta[0, 0] = 1.5, 2.0  # ||dW||_F = 2.5 (all exact in float32)
    c["model.layers.1.mlp.up_proj.weight"] += delta
    changes = {x.name: x for x in D.weight_changes(p, c)}
    assert changes["model.layers.1.mlp.up_proj.weight"].relative == pytest.approx(2.5 / 6, abs=1e-12)
    assert all(x.relative == 0 for n, x in changes.items() if n != "model.layers.1.mlp.up_proj.weight")
    per = D.layer_weight_change(list(changes.values()), 2)
    assert per["layers"][0]["relative"] == 0.0
    q = p["model.layers.1.self_attn.q_proj.weight"].double().norm()
    assert per["layers"][1]["relative"] == pytest.approx(2.5 / math.sqrt(36 + float(q) ** 2), rel=1e-9)
    assert per["layers"][1]["top_param"] == "model.layers.1.mlp.up_proj.weight"
    assert per["layers"][1]["top_relative"] == pytest.approx(2.5 / 6)


def test_mismatched_models_are_a_value_error():
    p = _params()
    with pytest.raises(ValueError, match="different parameters"):
        D.weight_changes(p, {k: v for k, v in p.items() if k != "model.norm.weight"})
    c = dict(p)
    c["model.norm.weight"] = torch.ones(5)
    with pytest.raises(ValueError, match="shape"):
        D.weight_changes(p, c)


def test_activation_change_by_hand():
    acc = D.ActivationDiff()
    parent = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    child = torch.tensor([[4.0, 3.0], [1.0, 0.0]])  # token 0: ||d|| = sqrt 2, ||p|| = 5, cos 24/25
    acc.update("blocks.0.hook_resid_post", parent, child)
    acc.update("blocks.1.hook_resid_post", parent, parent.clone())
    r = acc.result()
    a = r["blocks.0.hook_resid_post"]
    assert a["relative_l2"] == pytest.approx(math.sqrt(2) / 5 / 2)
    assert a["cosine"] == pytest.approx((24 / 25 + 1) / 2)
    assert a["pooled_relative"] == pytest.approx(math.sqrt(2 / 26))
    assert a["n_tokens"] == 2
    assert r["blocks.1.hook_resid_post"] == {"relative_l2": 0.0, "cosine": 1.0, "pooled_relative": 0.0, "n_tokens": 2}


def test_activation_change_accumulates_over_batches_as_one():
    torch.manual_seed(0)
    p, c = torch.randn(10, 6), torch.randn(10, 6)
    one, two = D.ActivationDiff(), D.ActivationDiff()
    one.update("h", p, c)
    two.update("h", p[:3], c[:3])
    two.update("h", p[3:], c[3:])
    for k, v in one.result()["h"].items():
        assert two.result()["h"][k] == pytest.approx(v, rel=1e-12)


def test_feature_changes_by_hand():
    sp, sc = D.FeatureStats(), D.FeatureStats()
    sp.update(torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 2.0]]))
    sc.update(torch.tensor([[1.0, 2.0, 2.0], [3.0, 0.0, 2.0]]))
    ch = D.feature_changes(sp, sc)
    assert ch["mean_parent"].tolist() == [2.0, 0.0, 2.0]
    assert ch["mean_child"].tolist() == [2.0, 1.0, 2.0]
    assert ch["freq_parent"].tolist() == [1.0, 0.0, 1.0]
    assert ch["freq_child"].tolist() == [1.0, 0.5, 1.0]
    assert ch["delta_mean"].tolist() == [0.0, 1.0, 0.0]
    assert ch["delta_freq"].tolist() == [0.0, 0.5, 0.0]
    # feature 1: var_parent 0, var_child 1 -> pooled sd sqrt(1/2); feature 2 never varies -> 0
    assert ch["standardized"].tolist() == pytest.approx([0.0, 1 / math.sqrt(0.5), 0.0])
    assert D.top_features(ch, 5) == [1]  # unchanged features are left out
    assert D.top_features(ch, 5, by="delta_freq") == [1]
    with pytest.raises(ValueError):
        D.top_features(ch, 5, by="nope")


def test_top_features_rank_by_absolute_change():
    ch = {"delta_mean": torch.tensor([0.5, -2.0, 1.0, 0.0, 2.0], dtype=torch.float64)}
    assert D.top_features(ch, 3) == [1, 4, 2]  # |-2| = |2|: the lower index first


def test_identical_codes_have_no_feature_change():
    x = torch.relu(torch.randn(50, 16))
    sp, sc = D.FeatureStats(), D.FeatureStats()
    sp.update(x)
    sc.update(x.clone())
    ch = D.feature_changes(sp, sc)
    assert ch["delta_mean"].abs().max() == 0 and ch["standardized"].abs().max() == 0
    assert D.top_features(ch, 10) == []


def test_cosine_of_a_planted_direction():
    torch.manual_seed(1)
    r = torch.randn(3, 64)
    noise = torch.randn(3, 64)
    noise -= (noise * r).sum(-1, keepdim=True) / r.pow(2).sum(-1, keepdim=True) * r  # orthogonal to r
    s = torch.tensor([0.0, 1.0, 3.0])
    noisy = r + (s * r.norm(dim=-1) / noise.norm(dim=-1))[:, None] * noise  # ||orthogonal part|| = s ||r||
    cos = D.direction_cosines(r, noisy)
    assert cos.dtype == torch.float64
    assert cos.tolist() == pytest.approx((1 / torch.sqrt(1 + s.double() ** 2)).tolist(), abs=1e-6)
    assert D.direction_cosines(r[0], -2 * r[0]).item() == pytest.approx(-1.0)
    assert math.isnan(D.direction_cosines(torch.zeros(4), torch.ones(4)).item())
