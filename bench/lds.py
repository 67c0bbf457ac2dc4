"""Linear Datamodeling Score (LDS) of Loupe's EK-FAC influence scores, against the identity baseline
and beside the seed-to-seed noise ceiling.

LDS (Park et al. 2023, "TRAK", arXiv:2303.14186, sec. 2; used by Grosse et al. 2023 and kronfluence):
for random subsets S_1..S_M of the training set (each half of it), retrain a model on each and
measure f_j(q) for a query q; the attribution's additive prediction for subset j is
g_j(q) = sum_{m in S_j} tau(q, z_m), and

    LDS(q) = Spearman_j( g_j(q), f_j(q) ),     reported as the mean over queries.

Setting (the defaults; --tiny shrinks every count, see TINY):
  * data: the built demo world's packed training tokens, WORKSPACE/artifacts/tokens/train.safetensors
    (read only). A fixed random subset (data seed 0) of --n-train rows, truncated to the first
    --ctx tokens, is the training set; --queries further rows of the same file (disjoint from the
    training set) are the queries. Measurement f(q) = sum of log p(x_t | x_<t) over the query's
    loss_mask positions (loupe.core.influence.sequence_logprob_terms).
  * model: a GPT-NeoX (loupe.demo.train.neox_config) with --layers layers, d_model 64, d_mlp 256,
    4 heads, vocab 4,096 (the demo tokenizer's), context --ctx; one fixed initialisation (init seed
    0) shared by every model; AdamW (lr 3e-3, betas 0.9/0.98, no weight decay), linear warm-up over
    10% of the steps then cosine to 10% of lr (loupe.demo.train.lr_at), gradient clipping 1.0,
    batch --batch sequences drawn by epochs of random permutations, --steps steps for every model
    (the full model and the half-size subset models alike). Loss: mean next-token cross-entropy
    over loss_mask positions (as the demo's training).
  * influence (the full model, trained on all --n-train rows): EK-FAC factors fitted by kronfluence
    on the MLP nn.Linear layers (loupe.core.influence.mlp_module_names), true Fisher (labels
    sampled from the model), damping 0.1 x mean(Lambda) per layer (I.factors_from_kronfluence);
    tau(q, z_m) = grad f(q)^T (G + lambda)^-1 grad log p(z_m) via I.per_token_layer_grads,
    I.sequence_gradients and I.exact_scores (Loupe's exact EK-FAC path). Identity baseline: the
    same per-layer gradients, plain dot product (I.exact_scores with identity factors: Q = I,
    Lambda = 0, lambda = 1).
  * retraining: --subsets random 50% subsets (subset seed 3), each trained from the same init with
    the same hyperparameters and batch-order seed A; f_j(q) for every query.
  * noise ceiling: the first --ceiling subsets are trained again with batch-order seed B (and, with
    --ceiling-vary init, also another init); ceiling(q) = Spearman_j( f_j^A(q), f_j^B(q) ), the
    mean over queries is printed beside the LDS. (A perfect attribution of the noiseless part of
    f correlates with one seed's f at about sqrt(ceiling), so sqrt is printed too.)
  * targets printed (not asserted): EK-FAC LDS >= 0.2 and >= 2x the identity LDS.

Results go to --out/summary.json and are printed as JSON at the end.

Threads: on this project's 2-core machine shared with a running `loupe build` (nice 0, both cores
busy), 2 torch threads under `nice -n 10` measured ~720 ms per training step against ~52 ms with 1
thread (the threads spin waiting for each other); run with --threads 1 when the cores are contended.
Measured (1 thread, contended, load average 3-7): ~50-65 ms per step of 16 x 64 tokens; the default
run trained 1 + 50 + 25 = 76 models at 12.4 s each (11.8-15.1 s) and took 991 s in all.

usage: nice -n 10 python bench/lds.py [--workspace W] [--tiny] [--n-train 1000] [--queries 30] [--subsets 50] [--ceiling 25]
       [--steps N] [--batch 16] [--layers 2] [--ctx 64] [--threads 2] [--out /tmp/lds_bench]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open

from loupe.core import influence as I
from loupe.demo.train import lr_at, neox_config
from loupe.demo.world import WorldConfig

VOCAB = 4096
DATA_SEED, INIT_SEED, ORDER_SEED_A, ORDER_SEED_B, SUBSET_SEED, FISHER_SEED = 0, 0, 1, 2, 3, 4
INIT_SEED_B = 5  # only with --ceiling-vary init
DEFAULTS = dict(n_train=1000, queries=30, subsets=50, ceiling=25, steps=240, batch=16, layers=2, ctx=64)
TINY = dict(n_train=200, queries=8, subsets=16, ceiling=8, steps=60, batch=16, layers=2, ctx=64)


def loadavg() -> list[str]:
    with open("/proc/loadavg") as fh:
        return fh.read().split()[:3]


def load_data(tokens: Path, n_train: int, n_queries: int, ctx: int) -> dict[str, torch.Tensor]:
    with safe_open(str(tokens), "pt") as f:
        ids, mask = f.get_tensor("input_ids"), f.get_tensor("loss_mask").bool()
    perm = torch.randperm(ids.shape[0], generator=torch.Generator().manual_seed(DATA_SEED))
    tr, qu = perm[:n_train], perm[n_train : n_train + n_queries]
    return {
        "train_rows": tr,
        "query_rows": qu,
        "train_ids": ids[tr, :ctx].contiguous(),
        "train_mask": mask[tr, :ctx].contiguous(),
        "query_ids": ids[qu, :ctx].contiguous(),
        "query_mask": mask[qu, :ctx].contiguous(),
    }


class Trainer:
    """Every model starts from the same initial state and uses the same hyperparameters."""

    def __init__(self, layers: int, ctx: int, steps: int, batch: int, lr: float = 3e-3):
        self.wcfg = WorldConfig(
            name="lds",
            vocab_size=VOCAB,
            n_layers=layers,
            d_model=64,
            n_heads=4,
            d_mlp=256,
            n_ctx=ctx,
            batch_size=batch,
            train_steps=steps,
            lr=lr,
            warmup_steps=max(1, steps // 10),
            weight_decay=0.0,
        )
        self.hf_cfg = neox_config(self.wcfg, VOCAB, 0)  # eos/pad id unused (no padding, no generation)
        self.init = {INIT_SEED: self._init_state(INIT_SEED)}

    def _init_state(self, seed: int) -> dict[str, torch.Tensor]:
        from transformers import GPTNeoXForCausalLM

        torch.manual_seed(seed)
        return {k: v.clone() for k, v in GPTNeoXForCausalLM(self.hf_cfg).state_dict().items()}

    def train(
        self, ids: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, order_seed: int, init_seed: int = INIT_SEED
    ):
        from transformers import GPTNeoXForCausalLM

        if init_seed not in self.init:
            self.init[init_seed] = self._init_state(init_seed)
        c = self.wcfg
        model = GPTNeoXForCausalLM(self.hf_cfg)
        model.load_state_dict(self.init[init_seed])
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=c.lr, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.0)
        g = torch.Generator().manual_seed(order_seed)
        need = c.train_steps * c.batch_size
        order = torch.cat([rows[torch.randperm(len(rows), generator=g)] for _ in range(need // len(rows) + 1)])
        order = order[:need].view(c.train_steps, c.batch_size)
        losses = []
        for step in range(c.train_steps):
            for grp in opt.param_groups:
                grp["lr"] = lr_at(step, c)
            x, m = ids[order[step]], mask[order[step]]
            logits = model(input_ids=x).logits
            targets = x[:, 1:].masked_fill(~m[:, 1:], -100)
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), targets.reshape(-1), ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        model.eval()
        tail = losses[-max(1, len(losses) // 10) :]
        return model, sum(tail) / len(tail)


@torch.no_grad()
def measure(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """f = summed log p over loss_mask positions, one value per row."""
    return I.sequence_logprob_terms(model(input_ids=ids).logits, ids, mask).sum(1).double()


def fit_ekfac(model, ids: torch.Tensor, mask: torch.Tensor, out: Path, batch: int) -> dict[str, I.LayerFactors]:
    """As InfluencePipeline.fit_factors: kronfluence EK-FAC, true Fisher, on a copy of the model."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments

    n = ids.shape[0]
    m = copy.deepcopy(model)
    names = I.mlp_module_names(m)
    task = I.make_task(names)
    m = prepare_model(m, task)
    ds = I.SequenceDataset(ids, mask)
    fargs = FactorArguments(
        strategy="ekfac", use_empirical_fisher=False, covariance_max_examples=n, lambda_max_examples=n
    )
    torch.manual_seed(FISHER_SEED)  # the sampled labels of the true Fisher
    an = Analyzer("lds", m, task, cpu=True, disable_tqdm=True, output_dir=str(out / "kronfluence"))
    an.fit_covariance_matrices("ekfac", ds, per_device_batch_size=batch, factor_args=fargs, overwrite_output_dir=True)
    an.perform_eigendecomposition("ekfac", factor_args=fargs, overwrite_output_dir=True)
    an.fit_lambda_matrices("ekfac", ds, per_device_batch_size=batch, factor_args=fargs, overwrite_output_dir=True)
    return I.factors_from_kronfluence(an.load_all_factors("ekfac"))


def identity_factors(factors: dict[str, I.LayerFactors]) -> dict[str, I.LayerFactors]:
    """Q_A = I, Q_G = I, Lambda = 0, lambda = 1: inverse_apply is the identity, exact_scores a plain dot product."""
    return {
        n: I.LayerFactors(
            q_a=torch.eye(f.q_a.shape[0]), q_g=torch.eye(f.q_g.shape[0]), lam=torch.zeros_like(f.lam), damping=1.0
        )
        for n, f in factors.items()
    }


def seq_grads(model, names, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    from loupe.services.activations import real_positions

    return I.sequence_gradients(I.logprob_layer_grads(model, names, ids, mask, real_positions(mask)))


def influence_scores(model, data, factors: dict[str, I.LayerFactors], batch: int) -> dict[str, torch.Tensor]:
    """tau [queries, n_train] for EK-FAC and for the identity baseline."""
    names = list(factors)
    ident = identity_factors(factors)
    qg = seq_grads(model, names, data["query_ids"], data["query_mask"])
    nq, n = data["query_ids"].shape[0], data["train_ids"].shape[0]
    out = {"ekfac": torch.zeros(nq, n, dtype=torch.float64), "identity": torch.zeros(nq, n, dtype=torch.float64)}
    for s in range(0, n, batch):
        sl = slice(s, min(n, s + batch))
        tg = seq_grads(model, names, data["train_ids"][sl], data["train_mask"][sl])
        for q in range(nq):
            qd = {k: v[q] for k, v in qg.items()}
            out["ekfac"][q, sl] = I.exact_scores(qd, tg, factors).double()
            out["identity"][q, sl] = I.exact_scores(qd, tg, ident).double()
    return out


def lds(tau: torch.Tensor, members: torch.Tensor, f: torch.Tensor) -> list[float]:
    """tau [Q, N], members [M, N] bool, f [M, Q] -> LDS per query."""
    pred = tau @ members.double().T  # [Q, M]
    return [I.spearman(pred[q], f[:, q]) for q in range(tau.shape[0])]


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help=f"smoke setting, < 2 min: {TINY}")
    ap.add_argument("--n-train", type=int)
    ap.add_argument("--queries", type=int)
    ap.add_argument("--subsets", type=int, help="M, the number of retrained 50%% subsets")
    ap.add_argument("--ceiling", type=int, help="K, subsets retrained with seed B for the noise ceiling")
    ap.add_argument(
        "--ceiling-vary",
        choices=("order", "init"),
        default="order",
        help="seed B changes the batch order only (default) or also the initialisation",
    )
    ap.add_argument("--steps", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--ctx", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--workspace",
        type=Path,
        default=Path("workspace"),
        help="a built demo workspace; its artifacts/tokens/train.safetensors is read",
    )
    ap.add_argument("--out", type=Path, default=Path("/tmp/lds_bench"))
    a = ap.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # kronfluence's torch.cuda.amp.GradScaler notice
    base = TINY if a.tiny else DEFAULTS
    cfg = {k: (getattr(a, k) if getattr(a, k) is not None else v) for k, v in base.items()}
    cfg["ceiling"] = min(cfg["ceiling"], cfg["subsets"])
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    load_before = loadavg()
    t_start = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:7.1f}s] {msg}", flush=True)

    tokens = a.workspace / "artifacts" / "tokens" / "train.safetensors"
    data = load_data(tokens, cfg["n_train"], cfg["queries"], cfg["ctx"])
    n = cfg["n_train"]
    trainer = Trainer(cfg["layers"], cfg["ctx"], cfg["steps"], cfg["batch"])
    setting = {
        **cfg,
        "tiny": a.tiny,
        "threads": a.threads,
        "ceiling_vary": a.ceiling_vary,
        "data": f"{tokens} rows (data seed {DATA_SEED}), first {cfg['ctx']} tokens; queries: other rows of the same file",
        "model": f"GPT-NeoX, {cfg['layers']} layers, d_model 64, d_mlp 256, 4 heads, vocab {VOCAB}, ctx {cfg['ctx']}, "
        f"{sum(v.numel() for v in trainer.init[INIT_SEED].values() if v.is_floating_point()):,} params (incl. buffers)",
        "optimizer": f"AdamW lr 3e-3 betas (0.9, 0.98) wd 0, warmup {trainer.wcfg.warmup_steps} steps then cosine to 10%, "
        f"clip 1.0, batch {cfg['batch']}, {cfg['steps']} steps for every model",
        "influence": "EK-FAC (kronfluence, true Fisher) on MLP nn.Linear layers, damping 0.1 x mean(Lambda) per layer; "
        "identity = plain per-layer gradient dot product over the same layers",
        "measurement": "f(q) = summed log p of the query's loss_mask tokens",
        "subset_fraction": 0.5,
        "seeds": {
            "data": DATA_SEED,
            "init": INIT_SEED,
            "order_A": ORDER_SEED_A,
            "order_B": ORDER_SEED_B,
            "subsets": SUBSET_SEED,
            "fisher_labels": FISHER_SEED,
            **({"init_B": INIT_SEED_B} if a.ceiling_vary == "init" else {}),
        },
        "machine": f"{platform.machine()}, {a.threads} torch threads, torch {torch.__version__}",
    }
    log(f"setting: {json.dumps(cfg)}")
    timings: dict[str, float] = {}

    # 1. the full model, its EK-FAC factors and the scores (fixed before any retraining is seen)
    t0 = time.monotonic()
    all_rows = torch.arange(n)
    full, full_loss = trainer.train(data["train_ids"], data["train_mask"], all_rows, ORDER_SEED_A)
    timings["train_full_s"] = round(time.monotonic() - t0, 2)
    f_full = measure(full, data["query_ids"], data["query_mask"])
    log(
        f"full model trained in {timings['train_full_s']} s, final train loss {full_loss:.3f}, "
        f"mean f(query) {float(f_full.mean()):.2f}"
    )
    t0 = time.monotonic()
    factors = fit_ekfac(full, data["train_ids"], data["train_mask"], a.out, batch=32)
    timings["ekfac_factors_s"] = round(time.monotonic() - t0, 2)
    log(
        f"EK-FAC factors for {list(factors)} in {timings['ekfac_factors_s']} s; "
        f"damping { ({k: round(f.damping, 6) for k, f in factors.items()}) }"
    )
    t0 = time.monotonic()
    tau = influence_scores(full, data, factors, batch=32)
    timings["scores_s"] = round(time.monotonic() - t0, 2)
    log(f"scores [{cfg['queries']} x {n}] in {timings['scores_s']} s")

    # 2. retraining on random halves (seed A), and K of them again with seed B
    g = torch.Generator().manual_seed(SUBSET_SEED)
    members = torch.zeros(cfg["subsets"], n, dtype=torch.bool)
    for j in range(cfg["subsets"]):
        members[j, torch.randperm(n, generator=g)[: n // 2]] = True
    f_a = torch.zeros(cfg["subsets"], cfg["queries"], dtype=torch.float64)
    f_b = torch.zeros(cfg["ceiling"], cfg["queries"], dtype=torch.float64)
    train_times: list[float] = []
    n_models = 1 + cfg["subsets"] + cfg["ceiling"]
    done = 1
    t_retrain = time.monotonic()
    for j in range(cfg["subsets"]):
        runs = [("A", ORDER_SEED_A, INIT_SEED)]
        if j < cfg["ceiling"]:
            runs.append(("B", ORDER_SEED_B, INIT_SEED_B if a.ceiling_vary == "init" else INIT_SEED))
        for tag, order_seed, init_seed in runs:
            t0 = time.monotonic()
            model, _ = trainer.train(
                data["train_ids"], data["train_mask"], members[j].nonzero().squeeze(1), order_seed, init_seed
            )
            train_times.append(time.monotonic() - t0)
            (f_a if tag == "A" else f_b)[j] = measure(model, data["query_ids"], data["query_mask"])
            done += 1
        if (j + 1) % 5 == 0 or j + 1 == cfg["subsets"]:
            rate = (time.monotonic() - t_retrain) / (done - 1)
            log(
                f"models {done}/{n_models} (subset {j + 1}/{cfg['subsets']}), {train_times[-1]:.1f} s last, "
                f"{rate:.1f} s/model avg, ~{rate * (n_models - done):.0f} s left, load {' '.join(loadavg())}"
            )
    timings["retrain_s"] = round(time.monotonic() - t_retrain, 1)

    # 3. the scores
    lds_ek, lds_id = lds(tau["ekfac"], members, f_a), lds(tau["identity"], members, f_a)
    k = cfg["ceiling"]
    ceil = [I.spearman(f_a[:k, q], f_b[:, q]) for q in range(cfg["queries"])] if k >= 3 else []
    f_avg = (f_a[:k] + f_b) / 2
    lds_ek_avg = lds(tau["ekfac"], members[:k], f_avg) if k >= 3 else []
    lds_id_avg = lds(tau["identity"], members[:k], f_avg) if k >= 3 else []
    m_ek, m_id = mean(lds_ek), mean(lds_id)
    m_ceil = mean(ceil) if ceil else None
    timings.update(
        total_s=round(time.monotonic() - t_start, 1),
        train_per_model_s_mean=round(mean(train_times), 2),
        train_per_model_s_min=round(min(train_times), 2),
        train_per_model_s_max=round(max(train_times), 2),
    )
    summary = {
        "setting": setting,
        "lds_ekfac": round(m_ek, 4),
        "lds_identity": round(m_id, 4),
        "ratio_ekfac_over_identity": round(m_ek / m_id, 3) if m_id > 0 else None,
        "noise_ceiling_seed_spearman": round(m_ceil, 4) if m_ceil is not None else None,
        "noise_ceiling_sqrt": round(max(m_ceil, 0.0) ** 0.5, 4) if m_ceil is not None else None,
        "lds_on_seed_average_of_ceiling_subsets": {
            "ekfac": round(mean(lds_ek_avg), 4) if lds_ek_avg else None,
            "identity": round(mean(lds_id_avg), 4) if lds_id_avg else None,
            "note": f"LDS over the first {k} subsets against the mean of the seed-A and seed-B f_j",
        },
        "targets": {"ekfac_lds >= 0.2": m_ek >= 0.2, "ekfac_lds >= 2x identity": m_ek >= 2 * m_id},
        "per_query": [
            {
                "row": int(data["query_rows"][q]),
                "lds_ekfac": round(lds_ek[q], 4),
                "lds_identity": round(lds_id[q], 4),
                "ceiling": round(ceil[q], 4) if ceil else None,
                "f_full": round(float(f_full[q]), 3),
                "f_subsets_mean": round(float(f_a[:, q].mean()), 3),
                "f_subsets_std": round(float(f_a[:, q].std()), 4),
            }
            for q in range(cfg["queries"])
        ],
        "full_model_train_loss": round(full_loss, 4),
        "timings": timings,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1), flush=True)
    log(
        f"LDS EK-FAC {m_ek:.3f} | identity {m_id:.3f} | noise ceiling (seed-seed Spearman) "
        f"{m_ceil if m_ceil is None else round(m_ceil, 3)} | written {a.out / 'summary.json'}"
    )


if __name__ == "__main__":
    main()
