"""Influence functions with EK-FAC (pure torch; no FastAPI or SQL).

Grosse, Bae, Anil et al. 2023, "Studying Large Language Model Generalization with Influence
Functions" (arXiv:2308.03296), eq. (4)-(9), (16)-(19):

    influence of training sequence z_m on a measurement f:
        I_f(z_m) = grad f(theta)^T (G + lambda I)^-1 grad log p(z_m | theta)

where G is the (true) Fisher of the summed per-sequence loss, approximated per layer by EK-FAC
(George et al. 2018): for a linear layer W (d_out x d_in, bias folded in as an extra input column),
the per-sequence gradient is a sum of outer products grad_W = sum_t delta_t a_t^T, and

    G_W ~ (Q_G (x) Q_A) diag(Lambda) (Q_G (x) Q_A)^T,   Q_A, Q_G eigenvectors of E[a a^T], E[delta delta^T],
    Lambda_ij = E_seq[ (Q_G^T grad_W Q_A)_ij^2 ]           (the eigenvalue correction),
    (G_W + lambda I)^-1 V = Q_G [ (Q_G^T V Q_A) / (Lambda + lambda) ] Q_A^T,

with damping lambda = 0.1 x mean(Lambda) per layer (Grosse et al. 2023, section 5.1). kronfluence
(Bae et al.) fits Q_A, Q_G and Lambda; this module reads them.

Sign convention: the score is written with grad log p(z_m), so a positive score means adding z_m to
the training set makes the measurement larger (for f = log p(completion | prompt): the completion
more likely). Normalisation: scores are divided by N, the number of training sequences, so a score
is the first-order predicted change of f (in nats for log-probabilities) when one more copy of z_m
is added to the N-sequence training set (adding z_m with weight 1/N moves theta by
(1/N) H^-1 grad log p(z_m); the Hessian of the mean loss is the Fisher per sequence).

Compact preconditioned gradients: in the EK-FAC eigenbasis the preconditioner is diagonal, so a
sequence's gradient becomes its whitened eigen-coordinates
    w_m = (Q_G^T grad_W Q_A) / sqrt(Lambda + lambda)          (d_out x d_in+1, elementwise),
and the exact score is sum_layers < w_q, w_m >. The cache keeps, for every training sequence, these
coordinates (all of them, or the `dim` with the largest expected energy Lambda / (Lambda + lambda)),
rounded to 2 bits each (`loupe.core.packed`); a query is one gradient, one rotation and one packed
inner product with every stored row, and its top candidates are then re-scored exactly (one
backward pass each). (Projecting onto eigen-blocks, LoGra-style as in Choe et al. 2024,
arXiv:2405.13954, or onto a PCA basis keeps far less of the score at the same size here:
bench/RESULTS.md.)

Long because the whole EK-FAC path lives here as pure functions over tensors, from per-token gradients
to the compact cache's rows and the exact scores, shared by the services and bench/.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loupe.core.tracked_layers import mlp_module_names as mlp_module_names  # the layers EK-FAC tracks

if TYPE_CHECKING:
    from kronfluence.task import Task

DAMPING_SCALE = 0.1  # lambda = 0.1 x mean eigenvalue (Grosse et al. 2023)
Batch = dict[str, Tensor]  # {"input_ids", "loss_mask", "real"}: SequenceDataset's items, batched


class HasModules(Protocol):
    def named_modules(
        self, memo: set[nn.Module] | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, nn.Module]]: ...


class CausalLM(HasModules, Protocol):
    """What the gradient capture uses of a Hugging Face causal LM (e.g. GPTNeoXForCausalLM): called with
    ``inputs_embeds=``, it returns an output with ``.logits``."""

    def get_input_embeddings(self) -> nn.Module: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


# -- the language-modelling objective -------------------------------------------------------------


def sequence_logprob_terms(logits: Tensor, input_ids: Tensor, mask: Tensor, targets: Tensor | None = None) -> Tensor:
    """log p(x_t | x_<t) at every predicted position t >= 1, zero where `mask` is False.
    logits [b, n, V], input_ids [b, n], mask [b, n] (position t has a token to predict) -> [b, n-1]."""
    tgt = input_ids[:, 1:] if targets is None else targets
    lp = -F.cross_entropy(logits[:, :-1].float().transpose(1, 2), tgt, reduction="none")
    return lp * mask[:, 1:].to(lp.dtype)


def sample_targets(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Labels drawn from the model's own predictive distribution (the true Fisher, Grosse et al. 2023 sec. 2.2)."""
    probs = torch.softmax(logits[:, :-1].detach().float(), -1)
    flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
    return flat.reshape(probs.shape[:-1])


# -- EK-FAC factors ---------------------------------------------------------------------------------


@dataclass
class LayerFactors:
    """EK-FAC factors of one linear layer (bias folded in: the activation side has d_in + 1 rows)."""

    q_a: Tensor  # [d_in+1, d_in+1] activation-covariance eigenvectors (columns)
    q_g: Tensor  # [d_out, d_out]   gradient-covariance eigenvectors (columns)
    lam: Tensor  # [d_out, d_in+1]  corrected eigenvalues Lambda (already averaged over sequences)
    damping: float  # lambda added to Lambda

    def inverse_apply(self, v: Tensor) -> Tensor:
        """(G + lambda I)^-1 v for v [..., d_out, d_in+1] (Grosse et al. 2023, eq. 19)."""
        rot = self.q_g.T @ v @ self.q_a
        return self.q_g @ (rot / (self.lam + self.damping)) @ self.q_a.T


def damping_for(lam: Tensor, scale: float = DAMPING_SCALE) -> float:
    return float(scale * lam.double().mean())


def factors_from_kronfluence(
    all_factors: dict[str, dict[str, Tensor]], scale: float = DAMPING_SCALE
) -> dict[str, LayerFactors]:
    """kronfluence's `load_all_factors` output -> per-layer EK-FAC factors with the paper's damping."""
    out = {}
    for name, lam in all_factors["lambda_matrix"].items():
        lam = (lam.double() / all_factors["num_lambda_processed"][name].double()).float()
        out[name] = LayerFactors(
            q_a=all_factors["activation_eigenvectors"][name].float(),
            q_g=all_factors["gradient_eigenvectors"][name].float(),
            lam=lam,
            damping=damping_for(lam, scale),
        )
    return out


# -- per-token layer inputs and output gradients ------------------------------------------------------


@contextmanager
def capture_linear(model: HasModules, names: Sequence[str]) -> Iterator[dict[str, dict[str, Tensor]]]:
    """Record each named nn.Linear's input a (bias column of ones appended) and, after backward,
    the gradient delta of the loss w.r.t. its output: store[name] = {"a": [b, t, d_in+1], "g": [b, t, d_out]}."""
    store: dict[str, dict[str, Tensor]] = {n: {} for n in names}
    handles = []
    modules = dict(model.named_modules())
    for n in names:
        mod = modules[n]

        def pre(m: nn.Module, inp: tuple[Any, ...]) -> tuple[Any, ...] | None:
            # The gradient reaches each tracked output from the loss alone, so the backward pass can stop
            # at the lowest tracked layer: its input becomes a leaf here instead of the embeddings (a
            # LoRA on the upper blocks then costs a backward through those blocks only).
            x = inp[0]
            if torch.is_grad_enabled() and not x.requires_grad:
                return (x.detach().requires_grad_(True), *inp[1:])
            return None

        def fwd(m: nn.Module, inp: tuple[Any, ...], out: Tensor, n: str = n) -> None:
            a = inp[0].detach()
            if m.bias is not None:
                a = torch.cat([a, a.new_ones(a.shape[:-1] + (1,))], -1)
            store[n]["a"] = a
            if out.requires_grad:
                out.register_hook(lambda g, n=n: store[n].__setitem__("g", g.detach()))

        handles.append(mod.register_forward_pre_hook(pre))
        handles.append(mod.register_forward_hook(fwd))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def per_token_layer_grads(
    model: CausalLM,
    names: Sequence[str],
    input_ids: Tensor,
    objective: Callable[[Tensor], Tensor],
    real: Tensor | None = None,
) -> dict[str, tuple[Tensor, Tensor]]:
    """Run `objective(logits)` (a [b] tensor, one scalar per sequence) backward and return, per layer,
    (a [b, t, d_in+1], delta [b, t, d_out]) with padding positions (real == False) zeroed. The
    per-sequence weight gradient is then sum_t delta_t a_t^T."""
    params = [p for p in model.parameters()]
    req = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    emb = model.get_input_embeddings()
    try:
        with capture_linear(model, names) as store:
            x = emb(input_ids).detach()  # no parameter grads: capture_linear's leaves start the graph
            logits = model(inputs_embeds=x).logits
            total = objective(logits).sum()
            if total.requires_grad:  # else no tracked layer lies below what is measured: every delta is 0
                total.backward()
    finally:  # a failed pass must not leave the model's parameters frozen
        for p, r in zip(params, req):
            p.requires_grad_(r)
    modules = dict(model.named_modules())
    out = {}
    for n in names:
        a, g = store[n]["a"], store[n].get("g")
        if g is None:
            lin = modules[n]
            assert isinstance(lin, nn.Linear), n  # capture_linear records nn.Linear layers
            g = a.new_zeros(a.shape[:-1] + (lin.out_features,))  # a's dtype and device
        if real is not None:
            a = a * real[..., None].to(a.dtype)
            g = g * real[..., None].to(g.dtype)
        out[n] = (a, g)
    return out


def logprob_layer_grads(
    model: CausalLM, names: Sequence[str], input_ids: Tensor, mask: Tensor, real: Tensor | None = None
) -> dict[str, tuple[Tensor, Tensor]]:
    """per_token_layer_grads of each sequence's log-probability of its `mask` tokens (a training
    sequence's log p(z), or a completion's log p(completion | prompt)). Given `real`, the batch is cut
    after its last real position first (real_width): the per-token tensors are [b, that width, ...]."""
    if real is not None:
        w = real_width(real)
        input_ids, mask, real = input_ids[:, :w], mask[:, :w], real[:, :w]
    return per_token_layer_grads(
        model, names, input_ids, lambda lg: sequence_logprob_terms(lg, input_ids, mask).sum(1), real
    )


def real_width(real: Tensor) -> int:
    """Columns up to the last real position of any row of a right-padded batch [b, n]. Cut there, every
    real position's output and gradient are unchanged (a causal model: no position sees a later one), and
    the padding, up to the longest sequence of a whole dataset, costs nothing."""
    cols = torch.nonzero(real.any(0)).flatten()
    return int(cols[-1]) + 1 if cols.numel() else 1


def sequence_gradients(grads: dict[str, tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """Per-sequence weight gradients sum_t delta_t a_t^T: {name: [b, d_out, d_in+1]}."""
    return {n: torch.einsum("bto,bti->boi", g, a) for n, (a, g) in grads.items()}


# -- the compact (projected, whitened) representation --------------------------------------------------


@dataclass
class Projection:
    """Per layer: the EK-FAC eigenbases and the kept coordinates of the rotated, whitened gradient."""

    q_a: Tensor  # [d_in+1, d_in+1] activation eigenvectors
    q_g: Tensor  # [d_out, d_out]   gradient eigenvectors
    coords: Tensor  # [k] flat indices into the [d_out, d_in+1] eigen-coordinates, ascending
    scale: Tensor  # [k] (Lambda + lambda)^-1/2 at those coordinates

    @property
    def dim(self) -> int:
        return int(self.coords.numel())


def expected_energy(f: LayerFactors) -> Tensor:
    """E[w_ij^2] of a training gradient's whitened eigen-coordinate w = (Q_G^T grad Q_A) / sqrt(Lambda + lambda):
    r_ij = Lambda_ij / (Lambda_ij + lambda) (Lambda is the coordinate's second moment over sequences)."""
    return f.lam / (f.lam + f.damping)


def make_projection(factors: dict[str, LayerFactors], dim: int | None) -> dict[str, Projection]:
    """Keep the `dim` (None: all) eigen-coordinates, over all layers together, with the largest expected whitened
    energy r_ij. On the demo model the energy is spread thin (the top 16k of 395k coordinates hold 6%),
    so the demo cache keeps every coordinate; per-coordinate selection beats the Kronecker eigen-block
    of the same size and a CountSketch of all coordinates (bench/RESULTS.md)."""
    names = list(factors)
    r = torch.cat([expected_energy(factors[n]).flatten() for n in names])
    keep = torch.zeros(r.numel(), dtype=torch.bool)
    keep[torch.topk(r, min(dim or r.numel(), r.numel())).indices] = True
    out, off = {}, 0
    for n in names:
        f = factors[n]
        size = f.lam.numel()
        coords = torch.nonzero(keep[off : off + size]).flatten()
        off += size
        out[n] = Projection(q_a=f.q_a, q_g=f.q_g, coords=coords, scale=(f.lam.flatten()[coords] + f.damping).rsqrt())
    return out


def captured_energy(f: LayerFactors, p: Projection) -> float:
    """Share of the layer's expected whitened energy sum_ij r_ij that the kept coordinates hold."""
    r = expected_energy(f)
    return float(r.flatten()[p.coords].sum() / r.sum())


def project_tokens(a: Tensor, g: Tensor, p: Projection) -> tuple[Tensor, Tensor]:
    """Per-token factors rotated into the eigenbases: a [b,t,d_in+1], g [b,t,d_out]."""
    return a @ p.q_a, g @ p.q_g


def compact_sequence(a: Tensor, g: Tensor, p: Projection) -> Tensor:
    """Whitened kept eigen-coordinates of the per-sequence gradient sum_t delta_t a_t^T: [b, k]."""
    pa, pg = project_tokens(a, g, p)
    return torch.einsum("btg,bta->bga", pg, pa).flatten(1)[:, p.coords] * p.scale


def low_rank(m: Tensor, rank: int | None) -> Tensor:
    """Best rank-r approximation (truncated SVD) of a matrix: the paper's query batching (sec. 3.2)."""
    if rank is None or rank >= min(m.shape):
        return m
    u, s, vh = torch.linalg.svd(m.double(), full_matrices=False)  # typed Any in torch's stubs
    out: Tensor = ((u[:, :rank] * s[:rank]) @ vh[:rank]).to(m.dtype)
    return out


def compact_query(grad_w: Tensor, p: Projection, rank: int | None = None) -> Tensor:
    """A query's weight gradient [d_out, d_in+1] -> its whitened kept coordinates [k]; `rank` truncates
    the gradient first (query batching; the rotation keeps the rank)."""
    rot = p.q_g.T @ low_rank(grad_w, rank) @ p.q_a
    return rot.flatten()[p.coords] * p.scale


# -- exact EK-FAC (no projection): reference path ----------------------------------------------------


def exact_scores(
    query_grads: dict[str, Tensor], train_grads: dict[str, Tensor], factors: dict[str, LayerFactors]
) -> Tensor:
    """sum_layers < (G + lambda)^-1 grad f, grad log p(z_m) > for every training row:
    query_grads {name: [d_out, d_in+1]}, train_grads {name: [b, d_out, d_in+1]} -> [b]."""
    return preconditioned_scores(precondition(query_grads, factors), train_grads)


def precondition(
    query_grads: dict[str, Tensor], factors: dict[str, LayerFactors], rank: int | None = None
) -> dict[str, Tensor]:
    """(G + lambda)^-1 grad f per layer, the query side of every exact score; `rank` truncates the
    query gradient first (query batching)."""
    return {n: f.inverse_apply(low_rank(query_grads[n], rank)) for n, f in factors.items()}


def preconditioned_scores(pre: dict[str, Tensor], train_grads: dict[str, Tensor]) -> Tensor:
    """sum_layers < P, grad log p(z_m) > for a preconditioned query P (see `precondition`): [b]."""
    return _sum(torch.einsum("oi,boi->b", pre[n], train_grads[n]) for n in pre)


def exact_token_scores(grads: dict[str, tuple[Tensor, Tensor]], pre: dict[str, Tensor]) -> Tensor:
    """Per-token terms of the exact EK-FAC score: sum over layers of delta_t^T P a_t with P the
    preconditioned query gradient, [b, t]; they sum over t to exact_scores (the gradient is
    sum_t delta_t a_t^T)."""
    return _sum(torch.einsum("bto,oi,bti->bt", g, pre[n], a) for n, (a, g) in grads.items())


def _sum(terms: Iterable[Tensor]) -> Tensor:
    """The layers' terms added in order; no layers is an error (builtin sum returned the int 0)."""
    t = list(terms)
    if not t:
        raise ValueError("no layers to score")
    return sum(t[1:], t[0])


def spearman(x: Tensor, y: Tensor) -> float:
    rx = torch.argsort(torch.argsort(x.double())).double()
    ry = torch.argsort(torch.argsort(y.double())).double()
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx @ ry) / (rx.norm() * ry.norm()).clamp_min(1e-30))


def pearson(x: Tensor, y: Tensor) -> float:
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    return float((x @ y) / (x.norm() * y.norm()).clamp_min(1e-30))


def topk_overlap(x: Tensor, y: Tensor, k: int = 10) -> float:
    a = set(torch.topk(x, k).indices.tolist())
    b = set(torch.topk(y, k).indices.tolist())
    return len(a & b) / k


def describe_projection(projs: dict[str, Projection]) -> dict[str, Any]:
    return {n: {"dim": p.dim, "of": p.q_g.shape[0] * p.q_a.shape[0]} for n, p in projs.items()}


# -- kronfluence: the task (objective and measurement) and datasets ---------------------------------


def make_task(module_names: Sequence[str], measurement: Callable[[Batch, nn.Module], Tensor] | None = None) -> Task:
    """A kronfluence `Task` for a causal LM over dict batches {"input_ids", "loss_mask", "real"}.

    Training loss: summed next-token cross-entropy over `loss_mask` positions; with `sample=True`
    the targets are drawn from the model (true Fisher). Measurement: `measurement(batch, model)`,
    by default log p(completion | prompt), the summed log-probability of the positions in
    `loss_mask` (a query batch marks only its completion tokens). kronfluence scores are
    grad f . H^-1 grad L_train with L_train the loss, so Loupe's score (grad log p(z)) is minus it."""
    from kronfluence.task import Task

    names = list(module_names)

    class CausalLMTask(Task):
        def compute_train_loss(self, batch: Batch, model: nn.Module, sample: bool = False) -> Tensor:
            logits = model(input_ids=batch["input_ids"]).logits
            targets = sample_targets(logits) if sample else None
            return -sequence_logprob_terms(logits, batch["input_ids"], batch["loss_mask"], targets).sum()

        def compute_measurement(self, batch: Batch, model: nn.Module) -> Tensor:
            if measurement is not None:
                return measurement(batch, model)
            logits = model(input_ids=batch["input_ids"]).logits
            return sequence_logprob_terms(logits, batch["input_ids"], batch["loss_mask"]).sum()

        def get_influence_tracked_modules(self) -> list[str]:
            return names

        def get_attention_mask(self, batch: Batch) -> Tensor:
            return batch["real"]

    return CausalLMTask()


def collate_cut(items: Sequence[Batch]) -> Batch:
    """kronfluence's batches of SequenceDataset items, cut after their last real position (real_width):
    the rows are padded to the dataset's longest, and the padding's columns change nothing the fit
    counts (get_attention_mask leaves them out) while costing a whole forward and backward."""
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    w = real_width(batch["real"])
    return {k: v[:, :w] for k, v in batch.items()}


class SequenceDataset(torch.utils.data.Dataset[Batch]):
    """Rows of packed token tensors as kronfluence batches; `on_item(i)` is called per item read
    (progress of kronfluence's passes, which run in this process)."""

    def __init__(
        self,
        input_ids: Tensor,
        loss_mask: Tensor,
        real: Tensor | None = None,
        on_item: Callable[[int], None] | None = None,
    ):
        self.input_ids, self.loss_mask = input_ids, loss_mask.bool()
        if real is None:
            real = self.loss_mask.clone()
            real[:, 0] = True
        self.real = real
        self.on_item = on_item

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        if self.on_item is not None:
            self.on_item(i)
        return {"input_ids": self.input_ids[i], "loss_mask": self.loss_mask[i], "real": self.real[i]}
