"""Influence maths against closed forms and against kronfluence itself (tiny models, seconds)."""

from __future__ import annotations

import tempfile

import pytest
import torch

from loupe.core import influence as I


def tiny_neox(seed: int = 0):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    return GPTNeoXForCausalLM(cfg).eval()


def test_ekfac_inverse_with_exact_kronecker_eigenvalues_equals_dense_kronecker_inverse():
    """With Lambda = outer(eig(S), eig(A)) (no correction), EK-FAC's inverse is (S (x) A + lambda I)^-1."""
    torch.manual_seed(0)
    d_out, d_in = 3, 4
    ma, mg = torch.randn(d_in, 7).double(), torch.randn(d_out, 5).double()
    A, S = ma @ ma.T / 7, mg @ mg.T / 5
    ea, qa = torch.linalg.eigh(A)
    eg, qg = torch.linalg.eigh(S)
    f = I.LayerFactors(q_a=qa, q_g=qg, lam=torch.outer(eg, ea), damping=0.3)
    V = torch.randn(d_out, d_in).double()
    # vec(V) row-major: index (o, i) -> o * d_in + i, so the Fisher is kron(S, A)
    dense = torch.kron(S, A) + 0.3 * torch.eye(d_out * d_in, dtype=torch.float64)
    want = torch.linalg.solve(dense, V.reshape(-1)).reshape(d_out, d_in)
    assert torch.allclose(f.inverse_apply(V), want, atol=1e-10)


def test_linear_layer_gradient_is_sum_of_outer_products_and_matches_autograd():
    model = tiny_neox()
    names = I.mlp_module_names(model)
    assert len(names) == 4 and names[0].endswith("layers.0.mlp.dense_h_to_4h")
    ids = torch.randint(0, 50, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[:, 0] = False
    grads = I.sequence_gradients(
        I.per_token_layer_grads(model, names, ids, lambda lg: I.sequence_logprob_terms(lg, ids, mask).sum(1))
    )
    for b in range(3):
        model.zero_grad()
        I.sequence_logprob_terms(
            model(input_ids=ids[b : b + 1]).logits, ids[b : b + 1], mask[b : b + 1]
        ).sum().backward()
        mods = dict(model.named_modules())
        for n in names:
            full = torch.cat([mods[n].weight.grad, mods[n].bias.grad[:, None]], 1)
            assert torch.allclose(grads[n][b], full, atol=1e-5), n


@pytest.fixture(scope="module")
def kron_tiny():
    """EK-FAC factors and exact pairwise scores (also per token) from kronfluence on a tiny GPT-NeoX."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments

    torch.manual_seed(1)
    ids = torch.randint(0, 50, (24, 12))
    mask = torch.ones(24, 12, dtype=torch.bool)
    mask[:, 0] = False
    mask[3, 8:] = False  # a padded sequence
    q_ids = torch.randint(0, 50, (2, 12))
    q_mask = torch.zeros(2, 12, dtype=torch.bool)
    q_mask[:, 8:] = True  # the "completion"
    names = I.mlp_module_names(tiny_neox())
    task = I.make_task(names)
    model = prepare_model(tiny_neox(), task)
    with tempfile.TemporaryDirectory() as d:
        an = Analyzer("t", model, task, cpu=True, disable_tqdm=True, output_dir=d)
        an.fit_all_factors(
            "f", I.SequenceDataset(ids, mask), per_device_batch_size=8, factor_args=FactorArguments(strategy="ekfac")
        )
        out = {}
        for per_token in (False, True):
            an.compute_pairwise_scores(
                f"s{per_token}",
                "f",
                I.SequenceDataset(q_ids, q_mask),
                I.SequenceDataset(ids, mask),
                per_device_query_batch_size=2,
                per_device_train_batch_size=8,
                score_args=ScoreArguments(damping_factor=None, compute_per_token_scores=per_token),
            )
            out[per_token] = an.load_pairwise_scores(f"s{per_token}")["all_modules"]
        facs = I.factors_from_kronfluence(an.load_all_factors("f"))
    return {
        "ids": ids,
        "mask": mask,
        "q_ids": q_ids,
        "q_mask": q_mask,
        "names": names,
        "factors": facs,
        "kf": out[False],
        "kf_tok": out[True],
    }


def test_covariance_fitted_on_batches_cut_after_their_last_real_position_is_unchanged():
    """kronfluence's covariance pass over right-padded rows, with and without collate_cut: the same
    activation and gradient covariances (empirical Fisher, so no sampled labels differ)."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments
    from kronfluence.utils.dataset import DataLoaderKwargs

    torch.manual_seed(2)
    ids = torch.randint(0, 50, (6, 14))
    real = torch.arange(14)[None] < torch.tensor([5, 9, 3, 7, 4, 6])[:, None]  # the longest row is 9 of 14
    mask = real.clone()
    mask[:, 0] = False
    batch = I.collate_cut([I.SequenceDataset(ids, mask, real)[i] for i in range(3)])
    assert batch["input_ids"].shape == (3, 9) and batch["real"].all(0)[:3].all()
    names = I.mlp_module_names(tiny_neox())
    task = I.make_task(names)
    covs = []
    for loader in (None, DataLoaderKwargs(collate_fn=I.collate_cut)):
        with tempfile.TemporaryDirectory() as d:
            an = Analyzer("t", prepare_model(tiny_neox(), task), task, cpu=True, disable_tqdm=True, output_dir=d)
            args = FactorArguments(strategy="ekfac", use_empirical_fisher=True)
            an.fit_covariance_matrices(
                "f",
                I.SequenceDataset(ids, mask, real),
                per_device_batch_size=3,
                factor_args=args,
                dataloader_kwargs=loader,
            )
            covs.append(an.load_covariance_matrices("f"))
    for kind, per_module in covs[0].items():
        for name, cov in per_module.items():
            torch.testing.assert_close(covs[1][kind][name], cov, msg=f"{kind} {name}")


def test_the_backward_pass_stops_at_the_lowest_tracked_layer_and_the_gradients_match_autograd():
    """Tracking only the upper block's MLP (as a LoRA on the upper blocks does): the gradients equal
    autograd's weight gradients, and no backward runs through the block below it."""
    model = tiny_neox(3)
    names = [n for n in I.mlp_module_names(model) if ".layers.1." in n]
    ids = torch.randint(0, 50, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.bool)
    below = []
    h = model.gpt_neox.layers[0].mlp.dense_4h_to_h.register_full_backward_hook(lambda *a: below.append(1))
    try:
        grads = I.sequence_gradients(_grads(model, names, ids, mask))
    finally:
        h.remove()
    assert below == []
    mods = dict(model.named_modules())
    for b in range(2):
        model.zero_grad()
        I.sequence_logprob_terms(
            model(input_ids=ids[b : b + 1]).logits, ids[b : b + 1], mask[b : b + 1]
        ).sum().backward()
        for n in names:
            full = torch.cat([mods[n].weight.grad, mods[n].bias.grad[:, None]], 1)
            assert torch.allclose(grads[n][b], full, atol=1e-5), n


def _grads(model, names, ids, mask, real=None):
    return I.per_token_layer_grads(model, names, ids, lambda lg: I.sequence_logprob_terms(lg, ids, mask).sum(1), real)


def test_cutting_a_batch_after_its_last_real_position_keeps_every_gradient():
    """Right padding up to a dataset's longest sequence: the columns after a batch's last real position
    change no real position's gradient (causal attention)."""
    model = tiny_neox()
    torch.manual_seed(1)
    ids = torch.randint(0, 50, (3, 14))
    real = torch.arange(14)[None] < torch.tensor([5, 9, 3])[:, None]
    mask = real.clone()
    mask[:, 0] = False
    names = I.mlp_module_names(model)
    w = I.real_width(real)
    assert w == 9
    full = I.sequence_gradients(_grads(model, names, ids, mask, real))  # every column
    per_token = I.logprob_layer_grads(model, names, ids, mask, real)  # cut after column w
    assert all(a.shape[1] == w and g.shape[1] == w for a, g in per_token.values())
    cut = I.sequence_gradients(per_token)
    for n in names:
        torch.testing.assert_close(cut[n], full[n])


def test_exact_scores_equal_kronfluence_with_opposite_sign(kron_tiny):
    k = kron_tiny
    model = tiny_neox()
    real = k["mask"].clone()
    real[:, 0] = True
    train = I.sequence_gradients(_grads(model, k["names"], k["ids"], k["mask"], real))
    for qi in range(2):
        sl = slice(qi, qi + 1)
        q = {
            n: v[0] for n, v in I.sequence_gradients(_grads(model, k["names"], k["q_ids"][sl], k["q_mask"][sl])).items()
        }
        mine = I.exact_scores(q, train, k["factors"])
        # kronfluence: grad f . H^-1 grad(loss); Loupe: grad f . H^-1 grad(log p) = minus that
        assert torch.allclose(mine, -k["kf"][qi], rtol=1e-4, atol=1e-4 * float(mine.abs().max()))
    # the damping kronfluence used (None: its heuristic) is the paper's 0.1 x mean(Lambda) per layer
    for f in k["factors"].values():
        assert f.damping == pytest.approx(0.1 * float(f.lam.double().mean()))


def test_compact_scores_with_every_coordinate_are_exact_and_token_scores_sum(kron_tiny):
    k = kron_tiny
    model = tiny_neox()
    real = k["mask"].clone()
    real[:, 0] = True
    names, facs = k["names"], k["factors"]
    full = I.make_projection(facs, 10**9)
    grads = _grads(model, names, k["ids"], k["mask"], real)
    C = torch.cat([I.compact_sequence(a, g, full[n]) for n, (a, g) in grads.items()], 1)
    q_raw = {n: v[0] for n, v in I.sequence_gradients(_grads(model, names, k["q_ids"][:1], k["q_mask"][:1])).items()}
    q = {n: I.compact_query(q_raw[n], full[n]) for n in names}
    fast = C @ torch.cat([q[n] for n in names])
    assert torch.allclose(fast, -k["kf"][0], rtol=1e-4, atol=1e-4 * float(fast.abs().max()))
    # the exact per-token terms (what fast mode's re-scoring returns) sum to the score and equal
    # kronfluence's token-wise scores
    tok = I.exact_token_scores(grads, I.precondition(q_raw, facs))
    assert torch.allclose(tok.sum(1), fast, atol=1e-4 * float(fast.abs().max()))
    assert torch.allclose(tok, -k["kf_tok"][0], atol=1e-4 * float(tok.abs().max()))
    assert I.captured_energy(facs[names[0]], full[names[0]]) == pytest.approx(1.0)


def test_projection_keeps_the_highest_energy_coordinates_and_correlation(kron_tiny):
    k = kron_tiny
    model = tiny_neox()
    names, facs = k["names"], k["factors"]
    real = k["mask"].clone()
    real[:, 0] = True
    grads = _grads(model, names, k["ids"], k["mask"], real)
    q_raw = {n: v[0] for n, v in I.sequence_gradients(_grads(model, names, k["q_ids"][:1], k["q_mask"][:1])).items()}
    exact = -k["kf"][0]
    total = sum(f.lam.numel() for f in facs.values())
    r_all = torch.cat([I.expected_energy(facs[n]).flatten() for n in names])
    energies, corrs = [], []
    for dim in (total // 20, total // 5, total // 2):
        projs = I.make_projection(facs, dim)
        assert sum(p.dim for p in projs.values()) == dim
        kept = torch.cat([I.expected_energy(facs[n]).flatten()[projs[n].coords] for n in names])
        assert float(kept.min()) >= float(torch.topk(r_all, dim).values.min())  # the top `dim` over all layers
        C = torch.cat([I.compact_sequence(a, g, projs[n]) for n, (a, g) in grads.items()], 1)
        fast = C @ torch.cat([I.compact_query(q_raw[n], projs[n]) for n in names])
        energies.append(float(kept.sum() / r_all.sum()))
        corrs.append(I.pearson(fast, exact))
    assert energies[0] < energies[1] < energies[2]
    assert corrs[-1] > 0.9


def test_low_rank_query_is_the_truncated_svd():
    torch.manual_seed(0)
    m = torch.randn(6, 5).double()
    s = torch.linalg.svdvals(m)
    for r in (1, 3):
        err = torch.linalg.norm(m - I.low_rank(m, r))
        assert float(err) == pytest.approx(float(s[r:].norm()), rel=1e-9)
    assert torch.equal(I.low_rank(m, None), m)


def test_rank_metrics():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert I.spearman(x, x**3) == pytest.approx(1.0)
    assert I.spearman(x, -x) == pytest.approx(-1.0)
    assert I.topk_overlap(x, torch.tensor([4.0, 3.0, 2.0, 1.0]), 2) == 0.0
