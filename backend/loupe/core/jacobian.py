"""The training Jacobian J = d theta_T / d theta_0 and its spectrum (pure torch, no I/O).

Belrose & Scherlis 2024, "Understanding Gradient Descent through the Training Jacobian"
(arXiv:2412.07003). Their setup, the default here: an MLP 64 -> 64 -> 10 with GELU (4,810
parameters) on scikit-learn's digits, 1,600 train / 197 test examples, batch 64, 25 epochs in a
fixed batch order (625 steps), SGD with momentum 0.9 and a learning rate cosine-decayed from 0.1
to 0. Training is one pure function theta_0 -> theta_T (``torch.func.functional_call``), so

    J = d theta_T / d theta_0

is computed by forward mode: ``torch.func.jvp`` through the whole loop, ``vmap``-ed over chunks of
basis tangents e_j (column j of J per tangent), in float64. Then a full SVD J = U S V^T and:

* regions, with ``tol`` = 0.1 (the paper's bulk width):
    chaotic  sigma >= 1 + tol
    bulk     |sigma - 1| < tol
    stable   sigma <= 1 - tol
* alignment_i = cos(u_i, v_i) = u_i . v_i (both unit vectors; signed).

SVD sign ambiguity: (u_i, v_i) -> (-u_i, -v_i) leaves u_i . v_i unchanged, so the alignment is
well defined (up to degenerate singular values, where any rotation of the pair is a valid SVD).

Long because the paper's whole experiment lives here: the model, data, training loop, Jacobian,
spectrum, regions and the perturbation experiment share one parameter layout.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

from loupe.core.autodiff import FORWARD_AD
from loupe.core.config import Progress

Control = Literal["none", "white_noise", "shuffled_labels"]

CONTROLS: tuple[str, ...] = ("none", "white_noise", "shuffled_labels")
INITS: tuple[str, ...] = ("lecun", "torch")
# Tangents per vmap chunk. At the paper's size in float64 on 2 idle cores, the full J extrapolated from
# one epoch: chunk 64 -> 3,030 s (per-call overhead), 256 -> 450 s, 1,203 -> 1,230 s (the batched
# activations no longer fit in cache).
DEFAULT_CHUNK = 256


@dataclass(frozen=True)
class TrainConfig:
    """One training run of the digits MLP. ``seed`` is the initialisation seed; the data split and the
    batch order come from ``data_seed`` and stay fixed across seeds (so two seeds differ only in theta_0)."""

    seed: int = 0
    width: int = 64
    depth: int = 1  # hidden layers
    epochs: int = 25
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    n_train: int = 1600
    n_test: int = 197
    control: Control = "none"
    data_seed: int = 0
    inputs: Literal["unit", "standardized"] = "unit"  # pixels / 16 in [0, 1], or z-scored per pixel
    init: Literal["lecun", "torch"] = "lecun"  # see FlatMLP.init

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def steps_per_epoch(self) -> int:
        return self.n_train // self.batch_size

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def n_params(width: int, depth: int = 1, d_in: int = 64, d_out: int = 10) -> int:
    dims = [d_in] + [width] * depth + [d_out]
    return sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))


# -- data ------------------------------------------------------------------------------------------


@dataclass
class Data:
    x_train: Tensor  # (n_train, 64)
    y_train: Tensor  # (n_train,)
    x_test: Tensor  # (n_test, 64)
    y_test: Tensor
    x_noise: Tensor  # (n_noise, 64) white-noise inputs: the far out-of-distribution probe
    batches: Tensor  # (steps, batch) indices into the training set, the fixed batch order


def load_data(cfg: TrainConfig, dtype: torch.dtype = torch.float64, n_noise: int = 1000) -> Data:
    """Digits (8x8 images with pixel values 0..16, 1,797 examples): ``inputs="unit"`` divides by 16
    (values in [0, 1], the default), ``"standardized"`` z-scores each pixel with the training set's mean
    and std. Controls: ``white_noise`` replaces the training inputs with Gaussian noise of the same
    overall mean and std (labels kept, so the network can only memorise); ``shuffled_labels`` permutes
    the training labels. Test data is untouched. ``x_noise``: N(0, 1) inputs, the far
    out-of-distribution probe."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=dtype)
    y = torch.tensor(y, dtype=torch.long)
    if cfg.n_train + cfg.n_test > x.shape[0]:
        raise ValueError(f"digits has {x.shape[0]} examples; n_train + n_test = {cfg.n_train + cfg.n_test}")
    g = torch.Generator().manual_seed(cfg.data_seed)
    perm = torch.randperm(x.shape[0], generator=g)
    tr, te = perm[: cfg.n_train], perm[cfg.n_train : cfg.n_train + cfg.n_test]
    if cfg.inputs == "standardized":
        xs = (x - x[tr].mean(0)) / x[tr].std(0).clamp_min(1e-3)
    else:
        xs = x / 16.0
    x_train, y_train = xs[tr], y[tr]
    gc = torch.Generator().manual_seed(cfg.data_seed + 1)
    if cfg.control == "white_noise":
        x_train = torch.randn(x_train.shape, generator=gc, dtype=dtype) * x_train.std() + x_train.mean()
    elif cfg.control == "shuffled_labels":
        y_train = y_train[torch.randperm(cfg.n_train, generator=gc)]
    elif cfg.control != "none":
        raise ValueError(f"unknown control {cfg.control!r}; choose one of {', '.join(CONTROLS)}")
    usable = cfg.steps_per_epoch * cfg.batch_size
    batches = torch.cat(
        [
            torch.randperm(cfg.n_train, generator=g)[:usable].view(cfg.steps_per_epoch, cfg.batch_size)
            for _ in range(cfg.epochs)
        ]
    )
    x_noise = torch.randn(
        (n_noise, x.shape[1]), generator=torch.Generator().manual_seed(cfg.data_seed + 2), dtype=dtype
    )
    return Data(x_train, y_train, xs[te], y[te], x_noise, batches)


# -- model as a pure function of a flat parameter vector -------------------------------------------


class FlatMLP:
    """An ``nn.Sequential`` MLP (Linear, GELU, ..., Linear) addressed through one flat parameter vector,
    so training and the loss are pure functions of theta (``torch.func.functional_call``)."""

    def __init__(self, width: int, depth: int = 1, d_in: int = 64, d_out: int = 10, dtype: torch.dtype = torch.float64):
        dims = [d_in] + [width] * depth + [d_out]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b, dtype=dtype))
            if i < len(dims) - 2:
                layers.append(nn.GELU())
        self.module = nn.Sequential(*layers)
        self.names = [n for n, _ in self.module.named_parameters()]
        self.shapes = [p.shape for _, p in self.module.named_parameters()]
        self.sizes = [p.numel() for _, p in self.module.named_parameters()]
        self.n_params = sum(self.sizes)
        self.dtype = dtype

    def init(self, seed: int, scheme: str = "lecun") -> Tensor:
        """theta_0 under ``seed``, flattened. ``"lecun"``: the authors' code (Flax ``nn.Dense`` defaults):
        weights from a normal truncated at +-2 std, scaled so their variance is 1/fan_in (LeCun normal),
        biases zero. ``"torch"``: PyTorch's nn.Linear default (uniform, variance 1/(3 fan_in), biases too)."""
        g = torch.Generator().manual_seed(seed)
        if scheme == "lecun":
            return self._init_lecun(g)
        if scheme != "torch":
            raise ValueError(f"unknown init {scheme!r}; choose lecun or torch")
        # Kaiming-uniform(a=sqrt(5)) for weights and U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for biases
        # share the bound 1/sqrt(fan_in) (torch.nn.Linear.reset_parameters).
        out, fan_in = [], 1
        for shape in self.shapes:
            if len(shape) == 2:
                fan_in = shape[1]
            bound = 1.0 / math.sqrt(fan_in)
            out.append((torch.rand(shape, generator=g, dtype=self.dtype) * 2 - 1).mul_(bound).flatten())
        return torch.cat(out)

    # std of N(0, 1) truncated to [-2, 2]: dividing by it gives the truncated samples unit variance
    _TRUNC_STD = 0.87962566103423978

    def _init_lecun(self, g: torch.Generator) -> Tensor:
        out = []
        for shape in self.shapes:
            if len(shape) == 1:
                out.append(torch.zeros(shape, dtype=self.dtype))
                continue
            w = torch.randn(shape, generator=g, dtype=self.dtype)
            while (bad := w.abs() > 2).any():  # rejection sampling keeps the exact truncated law
                w[bad] = torch.randn(int(bad.sum()), generator=g, dtype=self.dtype)
            out.append((w / self._TRUNC_STD / math.sqrt(shape[1])).flatten())
        return torch.cat(out)

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        return {n: t.view(s) for n, t, s in zip(self.names, theta.split(self.sizes), self.shapes)}

    def __call__(self, theta: Tensor, x: Tensor) -> Tensor:
        out: Tensor = functional_call(self.module, self.unflatten(theta), (x,))
        return out

    def loss(self, theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
        return nn.functional.cross_entropy(self(theta, x), y)


def cosine_lr(lr: float, t: int, steps: int) -> float:
    """lr_t = lr * (1 + cos(pi t / T)) / 2: lr at t = 0, decaying to 0 at t = T (the last step, t = T-1,
    still moves a little)."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * t / steps))


def train(
    model: FlatMLP,
    theta0: Tensor,
    x: Tensor,
    y: Tensor,
    batches: Tensor,
    lr: float,
    momentum: float,
    on_step: Callable[[int], None] | None = None,
) -> Tensor:
    """theta_0 -> theta_T: SGD with heavy-ball momentum as torch.optim.SGD does it
    (b_t = mu b_{t-1} + g_t, b_0 = g_0; theta_{t+1} = theta_t - lr_t b_t), cosine learning rate.
    Pure in theta0 (no in-place updates), so it composes with torch.func.jvp / vmap."""
    g_fn = grad(model.loss)
    steps = batches.shape[0]
    theta, buf = theta0, None
    for t in range(steps):
        idx = batches[t]
        g = g_fn(theta, x[idx], y[idx])
        buf = g if buf is None else momentum * buf + g
        theta = theta - cosine_lr(lr, t, steps) * buf
        if on_step is not None:
            on_step(t)
    return theta


def training_jacobian(
    f: Callable[[Tensor], Tensor], theta0: Tensor, chunk: int = DEFAULT_CHUNK, progress: Progress | None = None
) -> Tensor:
    """J = df/dtheta at theta0, one column per basis tangent, by forward mode: vmap over a chunk of
    tangents of torch.func.jvp(f). Memory ~ chunk x (activations of one step); time ~ P / chunk runs
    of f (each carrying `chunk` tangents). Returns J with J[i, j] = d f_i / d theta0_j. Safe beside
    other threads: each chunk holds ``FORWARD_AD``, so another thread's jvp waits for it. `f` must not
    share an nn.Module with another thread (``functional_call`` swaps the module's parameters in place)."""
    p = theta0.numel()
    eye = torch.eye(p, dtype=theta0.dtype)
    cols = []
    push = vmap(lambda v: jvp(f, (theta0,), (v,))[1])
    for start in range(0, p, chunk):
        t0 = time.monotonic()
        with FORWARD_AD:  # forward AD is process-global in torch (loupe.core.autodiff, issue 21)
            cols.append(push(eye[start : start + chunk]))  # (c, P): rows are J e_j = column j
        if progress is not None:
            done = min(start + chunk, p)
            progress(done, p, f"J columns {done:,}/{p:,} ({time.monotonic() - t0:.1f}s per chunk)")
    return torch.cat(cols).T.contiguous()


# -- spectrum ---------------------------------------------------------------------------------------


@dataclass
class Spectrum:
    singular_values: Tensor  # (P,) descending
    alignment: Tensor  # (P,) cos(u_i, v_i)
    U: Tensor  # (P, P) left singular vectors (columns)
    V: Tensor  # (P, P) right singular vectors (columns): directions in theta_0 space
    tol: float = 0.1
    masks: dict[str, Tensor] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        s = self.singular_values
        p = s.numel()
        out: dict[str, Any] = {
            "n_params": p,
            "tol": self.tol,
            "sigma_1": float(s[0]),
            "sigma_min": float(s[-1]),
            "boundaries": {
                "chaotic": f"sigma >= {1 + self.tol:g}",
                "bulk": f"|sigma - 1| < {self.tol:g}",
                "stable": f"sigma <= {1 - self.tol:g}",
            },
        }
        for name, m in self.masks.items():
            k = int(m.sum())
            out[name] = {
                "count": k,
                "fraction": k / p,
                "median_alignment": float(self.alignment[m].median()) if k else None,
                "mean_alignment": float(self.alignment[m].mean()) if k else None,
            }
        out["bulk_fraction"] = out["bulk"]["fraction"]
        out["median_bulk_alignment"] = out["bulk"]["median_alignment"]
        return out


def regions(s: Tensor, tol: float = 0.1) -> dict[str, Tensor]:
    """Boolean masks: chaotic sigma >= 1 + tol; bulk |sigma - 1| < tol; stable sigma <= 1 - tol."""
    return {"chaotic": s >= 1 + tol, "bulk": (s - 1).abs() < tol, "stable": s <= 1 - tol}


def spectrum(J: Tensor, tol: float = 0.1) -> Spectrum:
    U, S, Vh = torch.linalg.svd(J)
    V = Vh.T
    align = (U * V).sum(0)
    return Spectrum(S, align, U, V, tol, regions(S, tol))


def subspace_overlap(A: Tensor, B: Tensor) -> float:
    """Mean squared cosine of the principal angles between span(A) and span(B) (orthonormal columns):
    ||A^T B||_F^2 / min(k_A, k_B). 1 = one contains the other; for a uniformly random k_B-dim subspace
    its expectation is max(k_A, k_B) / P (the random baseline k/P)."""
    ka, kb = A.shape[1], B.shape[1]
    if min(ka, kb) == 0:
        return 0.0
    return float((A.T @ B).pow(2).sum() / min(ka, kb))


def overlap_baseline(ka: int, kb: int, p: int) -> float:
    return max(ka, kb) / p


# -- evaluation and the perturbation experiment -----------------------------------------------------


def evaluate(model: FlatMLP, theta: Tensor, data: Data) -> dict[str, float]:
    with torch.no_grad():
        logits = model(theta, data.x_test)
        return {
            "test_loss": float(nn.functional.cross_entropy(logits, data.y_test)),
            "test_acc": float((logits.argmax(-1) == data.y_test).double().mean()),
            "train_loss": float(model.loss(theta, data.x_train, data.y_train)),
        }


def _kl(logits_p: Tensor, logits_q: Tensor) -> float:
    """Mean KL(p || q) over rows."""
    lp, lq = logits_p.log_softmax(-1), logits_q.log_softmax(-1)
    return float((lp.exp() * (lp - lq)).sum(-1).mean())


def perturbation_experiment(
    model: FlatMLP,
    theta0: Tensor,
    thetaT: Tensor,
    spec: Spectrum,
    data: Data,
    cfg: TrainConfig,
    eps: float = 1.0,
    per_region: int = 3,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Retrain from theta_0 + eps v for the top `per_region` right singular vectors v of each region
    (top = largest sigma in chaotic and bulk, smallest in stable) and random unit directions; measure
    the change in the trained network: test loss difference and KL(original || perturbed) on the test
    set (in distribution) and on white-noise inputs (far out of distribution). The paper's finding:
    bulk directions barely change in-distribution behaviour but do change it out of distribution."""
    base_test = model(thetaT, data.x_test).detach()
    base_noise = model(thetaT, data.x_noise).detach()
    base_loss = float(nn.functional.cross_entropy(base_test, data.y_test))
    s = spec.singular_values
    jobs: list[tuple[str, int | None, Tensor]] = []
    for name, m in spec.masks.items():
        idx = torch.nonzero(m).flatten()
        pick = idx[-per_region:].flip(0) if name == "stable" else idx[:per_region]
        jobs += [(name, int(i), spec.V[:, i]) for i in pick]
    g = torch.Generator().manual_seed(10_000 + seed)
    for _ in range(per_region):
        r = torch.randn(theta0.numel(), generator=g, dtype=theta0.dtype)
        jobs.append(("random", None, r / r.norm()))
    out = []
    for n, (name, i, v) in enumerate(jobs):
        with torch.no_grad():
            th = train(model, theta0 + eps * v, data.x_train, data.y_train, data.batches, cfg.lr, cfg.momentum)
            lt, ln = model(th, data.x_test), model(th, data.x_noise)
            loss = float(nn.functional.cross_entropy(lt, data.y_test))
        out.append(
            {
                "region": name,
                "index": i,
                "sigma": None if i is None else float(s[i]),
                "eps": eps,
                "test_loss": loss,
                "test_loss_change": loss - base_loss,
                "kl_test": _kl(base_test, lt),
                "kl_noise": _kl(base_noise, ln),
                "param_change": float((th - thetaT).norm()),
            }
        )
        if progress is not None:
            progress(n + 1, len(jobs), f"perturbation {n + 1}/{len(jobs)} ({name})")
    return out


def summarize_perturbations(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    by: dict[str, dict[str, float]] = {}
    for r in rows:
        d = by.setdefault(r["region"], {"n": 0, "abs_test_loss_change": 0.0, "kl_test": 0.0, "kl_noise": 0.0})
        d["n"] += 1
        d["abs_test_loss_change"] += abs(r["test_loss_change"])
        d["kl_test"] += r["kl_test"]
        d["kl_noise"] += r["kl_noise"]
    for d in by.values():
        for k in ("abs_test_loss_change", "kl_test", "kl_noise"):
            d[k] /= d["n"]
    return by


# -- one run -----------------------------------------------------------------------------------------


@dataclass
class RunResult:
    cfg: TrainConfig
    theta0: Tensor
    thetaT: Tensor
    J: Tensor
    spec: Spectrum
    metrics: dict[str, dict[str, float]]
    seconds_jacobian: float


class JacobianColumns:
    """Columns [start, stop) of the training Jacobian of one config, as `training_jacobian` computes
    them (the same tangents, one vmap per range): a worker holds one and is handed ranges, so the
    chunks of tangent seeds can run on several processes. Returns rows J e_j, [stop - start, P]."""

    def __init__(self, cfg: TrainConfig, dtype: torch.dtype = torch.float64):
        self.model = FlatMLP(cfg.width, cfg.depth, dtype=dtype)
        self.data = load_data(cfg, dtype)
        self.theta0 = self.model.init(cfg.seed, cfg.init)
        self.cfg = cfg

    def f(self, th: Tensor) -> Tensor:
        d, c = self.data, self.cfg
        return train(self.model, th, d.x_train, d.y_train, d.batches, c.lr, c.momentum)

    def __call__(self, block: tuple[int, int]) -> Tensor:
        start, stop = block
        p = self.theta0.numel()
        tangents = torch.zeros(stop - start, p, dtype=self.theta0.dtype)
        tangents[torch.arange(stop - start), torch.arange(start, stop)] = 1
        push = vmap(lambda v: jvp(self.f, (self.theta0,), (v,))[1])
        with FORWARD_AD:
            cols: Tensor = push(tangents)
        return cols


def run(
    cfg: TrainConfig,
    chunk: int = DEFAULT_CHUNK,
    dtype: torch.dtype = torch.float64,
    progress: Progress | None = None,
    map_chunks: Callable[[list[tuple[int, int]]], Iterable[Tensor]] | None = None,
) -> RunResult:
    """Train once (primal), then compute the full training Jacobian and its SVD. `map_chunks`, when
    given, computes the chunks of columns instead of this thread (each range by a `JacobianColumns`
    of `cfg`, wherever it runs: the caller's fan-out), yielding them in order."""
    model = FlatMLP(cfg.width, cfg.depth, dtype=dtype)
    data = load_data(cfg, dtype)
    theta0 = model.init(cfg.seed, cfg.init)
    p, steps = model.n_params, cfg.steps
    n_chunks = -(-p // chunk)
    state = {"chunk": 0, "t0": time.monotonic()}

    def on_step(t: int) -> None:
        if progress is not None and (t + 1) % 25 == 0:
            done = state["chunk"] * steps + t + 1
            el = time.monotonic() - state["t0"]
            eta = el / done * (n_chunks * steps - done)
            progress(
                done,
                n_chunks * steps,
                f"J chunk {state['chunk'] + 1}/{n_chunks}, step {t + 1}/{steps}, {el:.0f}s elapsed, ~{eta:.0f}s left",
            )

    def f(th: Tensor) -> Tensor:
        return train(model, th, data.x_train, data.y_train, data.batches, cfg.lr, cfg.momentum, on_step)

    def chunk_done(done: float, total: float | None, message: str) -> None:
        state["chunk"] += 1

    with torch.no_grad():
        thetaT = train(model, theta0, data.x_train, data.y_train, data.batches, cfg.lr, cfg.momentum)
    metrics = {"initial": evaluate(model, theta0, data), "final": evaluate(model, thetaT, data)}
    state["t0"] = t0 = time.monotonic()
    if map_chunks is None:
        J = training_jacobian(f, theta0, chunk, chunk_done)
    else:
        J = torch.cat(list(map_chunks([(s, min(p, s + chunk)) for s in range(0, p, chunk)]))).T.contiguous()
    secs = time.monotonic() - t0
    spec = spectrum(J)
    return RunResult(cfg, theta0, thetaT, J, spec, metrics, secs)
