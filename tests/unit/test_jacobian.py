"""The training Jacobian (core/jacobian.py) against finite differences and closed forms."""

from __future__ import annotations

import math
import threading

import torch

from loupe.core import jacobian as jac
from loupe.core import layer_jacobian

TINY = jac.TrainConfig(width=4, epochs=2, batch_size=16, n_train=48, n_test=32, lr=0.1)


def test_paper_size_has_4810_parameters():
    assert jac.n_params(64) == 4810 == jac.FlatMLP(64).n_params
    assert jac.TrainConfig().steps == 625


def test_init_matches_torch_linear_bounds():
    m = jac.FlatMLP(64)
    th = m.init(3, "torch")
    p = m.unflatten(th)
    # nn.Linear(64, 64): bound 1/8; nn.Linear(64, 10): bound 1/sqrt(64) = 1/8 too; second layer fan_in 64
    assert p["0.weight"].abs().max() <= 1 / 8 and p["0.weight"].abs().max() > 0.12
    assert p["2.bias"].abs().max() <= 1 / 8
    assert torch.equal(th, m.init(3, "torch")) and not torch.equal(th, m.init(4, "torch"))


def test_lecun_init_is_flax_dense_default():
    """Weights: N(0, 1) truncated to +-2 std, rescaled to variance 1/fan_in; biases zero."""
    m = jac.FlatMLP(256, d_in=256)
    p = m.unflatten(m.init(0, "lecun"))
    w = p["0.weight"]  # 65,536 draws, fan_in 256
    assert torch.count_nonzero(p["0.bias"]) == 0 and torch.count_nonzero(p["2.bias"]) == 0
    bound = 2 / jac.FlatMLP._TRUNC_STD / math.sqrt(256)
    assert w.abs().max() <= bound and w.abs().max() > 0.97 * bound
    assert abs(float(w.var()) * 256 - 1) < 0.02  # variance 1/fan_in (std error ~0.006)
    assert abs(float(p["2.weight"].var()) * 256 - 1) < 0.1
    th = m.init(5)
    assert torch.equal(th, m.init(5, "lecun")) and not torch.equal(th, m.init(6))


def _tiny():
    model = jac.FlatMLP(TINY.width)
    data = jac.load_data(TINY)
    theta0 = model.init(0)

    def f(th):
        return jac.train(model, th, data.x_train, data.y_train, data.batches, TINY.lr, TINY.momentum)

    return model, data, theta0, f


def test_jvp_matches_central_finite_differences():
    model, data, theta0, f = _tiny()
    J = jac.training_jacobian(f, theta0, chunk=model.n_params)
    assert J.shape == (model.n_params, model.n_params) and J.dtype == torch.float64
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(model.n_params, generator=g, dtype=torch.float64)
        v /= v.norm()
        h = 1e-5
        with torch.no_grad():
            fd = (f(theta0 + h * v) - f(theta0 - h * v)) / (2 * h)
        rel = (J @ v - fd).norm() / fd.norm()
        assert rel <= 1e-4, rel
    # and the Jacobian is not the identity: training moved the tangents
    assert (J - torch.eye(model.n_params, dtype=J.dtype)).abs().max() > 1e-2


def test_training_jacobian_beside_other_threads_doing_autodiff():
    """Issue 21: forward AD is process-global in torch, so a jvp in another thread used to break this
    one ("no level exists"). Competitors: another training Jacobian (its own model: functional_call
    swaps a module's parameters) and a reverse-mode layer Jacobian; every result must equal the
    single-threaded one."""
    model, _, theta0, f = _tiny()
    ref = jac.training_jacobian(f, theta0, chunk=64)
    W = torch.randn(16, 16, generator=torch.Generator().manual_seed(0))
    x0 = torch.linspace(-1, 1, 16)
    layer_ref = layer_jacobian.jacobian(lambda x: torch.tanh(W @ x), x0)
    stop, other = threading.Event(), []

    def compete(work):
        while not stop.is_set():
            try:
                other.append(work())
            except Exception as e:  # recorded, so the assertion below names it
                other.append(e)
                return

    _, _, theta0_b, f_b = _tiny()
    jobs = {
        "training": lambda: ("training", jac.training_jacobian(f_b, theta0_b, chunk=64)),
        "layer": lambda: ("layer", layer_jacobian.jacobian(lambda x: torch.tanh(W @ x), x0)),
    }
    threads = [threading.Thread(target=compete, args=(w,), daemon=True) for w in jobs.values()]
    for t in threads:
        t.start()
    try:
        mine = [jac.training_jacobian(f, theta0, chunk=64) for _ in range(2)]
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    errors = [e for e in other if isinstance(e, Exception)]
    assert not errors, errors
    assert {name for name, _ in other} == {"training", "layer"}
    for J in mine + [J for name, J in other if name == "training"]:
        torch.testing.assert_close(J, ref, rtol=1e-10, atol=1e-12)
    for J in [J for name, J in other if name == "layer"]:
        torch.testing.assert_close(J, layer_ref, rtol=1e-6, atol=1e-7)


class LeastSquares:
    """L(w) = ||X w - y||^2 / (2 n): Hessian H = X^T X / n everywhere (duck-types FlatMLP.loss)."""

    @staticmethod
    def loss(w, x, y):
        return 0.5 * ((x @ w - y) ** 2).mean()


def _ls_problem(p=5, n=12, steps=7):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, p, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    batches = torch.arange(n).repeat(steps, 1)  # full batch every step
    H = x.T @ x / n
    w0 = torch.randn(p, generator=g, dtype=torch.float64)
    return x, y, batches, H, w0


def test_gradient_descent_on_least_squares_is_product_of_I_minus_lr_H():
    x, y, batches, H, w0 = _ls_problem()
    steps, lr = batches.shape[0], 0.3
    f = lambda w: jac.train(LeastSquares, w, x, y, batches, lr, momentum=0.0)  # noqa: E731
    J = jac.training_jacobian(f, w0, chunk=2)
    expected = torch.eye(5, dtype=torch.float64)
    for t in range(steps):
        expected = (torch.eye(5, dtype=torch.float64) - jac.cosine_lr(lr, t, steps) * H) @ expected
    torch.testing.assert_close(J, expected, rtol=1e-12, atol=1e-12)
    # constant learning rate: (I - lr H)^T exactly; the cosine schedule with T -> the first step only
    one = torch.eye(5, dtype=torch.float64) - lr * H
    J1 = jac.training_jacobian(lambda w: jac.train(LeastSquares, w, x, y, batches[:1], lr, 0.0), w0)
    torch.testing.assert_close(J1, one, rtol=1e-12, atol=1e-12)


def test_momentum_on_least_squares_matches_the_linear_recurrence():
    x, y, batches, H, w0 = _ls_problem()
    steps, lr, mu = batches.shape[0], 0.2, 0.9
    J = jac.training_jacobian(lambda w: jac.train(LeastSquares, w, x, y, batches, lr, mu), w0, chunk=3)
    # tangents: db_t = mu db_{t-1} + H dw_t (db_{-1} = 0), dw_{t+1} = dw_t - lr_t db_t
    I = torch.eye(5, dtype=torch.float64)
    dw, db = I.clone(), torch.zeros_like(I)
    for t in range(steps):
        db = mu * db + H @ dw
        dw = dw - jac.cosine_lr(lr, t, steps) * db
    torch.testing.assert_close(J, dw, rtol=1e-12, atol=1e-12)


def test_regions_and_alignment_of_a_constructed_matrix():
    p = 8
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=torch.float64))
    s = torch.tensor([20.0, 3.0, 1.2, 1.05, 1.0, 0.95, 0.8, 0.01], dtype=torch.float64)
    sp = jac.spectrum(Q @ torch.diag(s) @ Q.T)  # symmetric PSD: u_i = v_i
    torch.testing.assert_close(sp.singular_values, s)
    torch.testing.assert_close(sp.alignment, torch.ones(p, dtype=torch.float64))
    # chaotic sigma >= 1.1 (20, 3, 1.2), bulk |sigma - 1| < 0.1 (1.05, 1, 0.95), stable sigma <= 0.9 (0.8, 0.01)
    summ = sp.summary()
    assert (summ["chaotic"]["count"], summ["bulk"]["count"], summ["stable"]["count"]) == (3, 3, 2)
    assert summ["bulk_fraction"] == 3 / 8 and math.isclose(summ["sigma_1"], 20.0, rel_tol=1e-12)
    # J = -I: u_i = -v_i, alignment -1
    torch.testing.assert_close(
        jac.spectrum(-torch.eye(4, dtype=torch.float64)).alignment, -torch.ones(4, dtype=torch.float64)
    )
    # a rotation by 90 degrees in a plane: sigma = 1 but u_i orthogonal to v_i
    R = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(jac.spectrum(R).alignment, torch.zeros(2, dtype=torch.float64))


def test_subspace_overlap_and_its_random_baseline():
    p, k = 60, 12
    g = torch.Generator().manual_seed(0)
    A, _ = torch.linalg.qr(torch.randn(p, k, generator=g, dtype=torch.float64))
    assert math.isclose(jac.subspace_overlap(A, A), 1.0, rel_tol=1e-12)
    full, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=torch.float64))
    assert abs(jac.subspace_overlap(full[:, :k], full[:, k : 2 * k])) < 1e-12
    vals = []
    for _ in range(100):
        B, _ = torch.linalg.qr(torch.randn(p, k, generator=g, dtype=torch.float64))
        vals.append(jac.subspace_overlap(A, B))
    mean = sum(vals) / len(vals)
    assert abs(mean - jac.overlap_baseline(k, k, p)) < 0.02, mean  # k/P = 0.2


def test_controls_change_only_the_training_data():
    base = jac.load_data(TINY)
    noise = jac.load_data(jac.TrainConfig(**{**TINY.to_dict(), "control": "white_noise"}))
    shuf = jac.load_data(jac.TrainConfig(**{**TINY.to_dict(), "control": "shuffled_labels"}))
    assert torch.equal(base.x_test, noise.x_test) and torch.equal(base.y_train, noise.y_train)
    assert not torch.allclose(base.x_train, noise.x_train)
    assert torch.equal(base.x_train, shuf.x_train)
    assert torch.equal(base.y_train.sort().values, shuf.y_train.sort().values)
    assert not torch.equal(base.y_train, shuf.y_train)
    assert base.batches.shape == (TINY.steps, TINY.batch_size)
