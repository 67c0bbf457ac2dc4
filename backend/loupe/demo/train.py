"""Train the demo GPT-NeoX on packed sequences, resumable from atomic safetensors checkpoints."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from loupe.demo.world import WorldConfig
from loupe.storage.artifacts import atomic_write_json, load_tensors, save_tensors

ProgressFn = Callable[[float, float | None, str], None]


def neox_config(cfg: WorldConfig, vocab_size: int, eos_id: int) -> GPTNeoXConfig:
    # rotary_pct: a legacy kwarg transformers 5 still reads (convert_rope_params_to_dict) but its typed fields omit
    return GPTNeoXConfig(  # type: ignore[call-arg]
        vocab_size=vocab_size,
        hidden_size=cfg.d_model,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        intermediate_size=cfg.d_mlp,
        max_position_embeddings=cfg.n_ctx,
        rotary_pct=0.25,
        hidden_act="gelu",
        use_parallel_residual=True,
        tie_word_embeddings=False,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        attention_dropout=0.0,
        hidden_dropout=0.0,
    )


def lr_at(step: int, cfg: WorldConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.train_steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def batch_order(n_seq: int, cfg: WorldConfig) -> torch.Tensor:
    """Sequence indices for every step, fixed by the seed so a resumed run sees the same batches."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    need = cfg.train_steps * cfg.batch_size
    perms = [torch.randperm(n_seq, generator=g) for _ in range(need // n_seq + 1)]
    return torch.cat(perms)[:need].view(cfg.train_steps, cfg.batch_size)


def _save_checkpoint(path: Path, model, opt, step: int) -> None:
    tensors = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    for i, p in enumerate(model.parameters()):
        st = opt.state.get(p)
        if st:
            tensors[f"opt.{i}.exp_avg"] = st["exp_avg"]
            tensors[f"opt.{i}.exp_avg_sq"] = st["exp_avg_sq"]
            tensors[f"opt.{i}.step"] = torch.as_tensor(st["step"]).reshape(1).float()
    save_tensors(path, tensors, metadata={"step": str(step)})


def _load_checkpoint(path: Path, model, opt) -> int:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        step = int(f.metadata()["step"])
    t = load_tensors(path)
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    for i, p in enumerate(model.parameters()):
        if f"opt.{i}.exp_avg" in t:
            opt.state[p] = {
                "exp_avg": t[f"opt.{i}.exp_avg"].clone(),
                "exp_avg_sq": t[f"opt.{i}.exp_avg_sq"].clone(),
                "step": t[f"opt.{i}.step"].reshape(()).clone(),
            }
    return step


def train_model(
    cfg: WorldConfig,
    tokens: dict[str, torch.Tensor],
    vocab_size: int,
    eos_id: int,
    work_dir: Path,
    progress: ProgressFn,
) -> tuple[GPTNeoXForCausalLM, dict]:
    """Returns the trained model and a training log. Checkpoints in `work_dir` let a killed run
    continue from its last checkpoint with the same batches it would have seen."""
    torch.manual_seed(cfg.seed)
    model = GPTNeoXForCausalLM(neox_config(cfg, vocab_size, eos_id))
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-8,
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    ckpt = work_dir / "checkpoint.safetensors"
    log_path = work_dir / "log.json"
    start = 0
    log: list[dict] = []
    if ckpt.exists():
        start = _load_checkpoint(ckpt, model, opt)
        if log_path.exists():
            log = [r for r in json.loads(log_path.read_text()) if r["step"] < start]
    ids, mask = tokens["input_ids"], tokens["loss_mask"]
    order = batch_order(ids.shape[0], cfg)
    t0 = time.monotonic()
    tokens_seen = 0
    running = None
    for step in range(start, cfg.train_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        idx = order[step]
        x, m = ids[idx], mask[idx]
        logits = model(input_ids=x).logits
        targets = x[:, 1:].masked_fill(~m[:, 1:], -100)  # padding predicts nothing
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens_seen += int(x.numel())
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 10 == 0 or step == cfg.train_steps - 1:
            rate = tokens_seen / max(1e-9, time.monotonic() - t0)
            log.append({"step": step, "loss": round(loss.item(), 4), "lr": lr_at(step, cfg)})
            progress(step + 1, cfg.train_steps, f"loss {running:.3f} · {rate:,.0f} tok/s")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.train_steps:
            _save_checkpoint(ckpt, model, opt, step + 1)
            atomic_write_json(log_path, log)
    model.eval()
    elapsed = time.monotonic() - t0
    summary = {
        "steps": cfg.train_steps,
        "resumed_from": start,
        "final_loss": log[-1]["loss"] if log else None,
        "seconds": round(elapsed, 1),
        "tokens_per_second": round(tokens_seen / max(elapsed, 1e-9)),
        "log": log,
    }
    return model, summary
