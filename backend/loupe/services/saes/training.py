"""Training SAEs with sae-lens on cached activations, saved in sae-lens's on-disk format.

    cached activations (services.activations) -> SAETrainer (sae-lens) -> SAE.save_inference_model

sae-lens supplies the SAE classes (`StandardTrainingSAE`: ReLU + L1; `TopKTrainingSAE`: TopK +
AuxK; `JumpReLUTrainingSAE`: a learned threshold per feature), the trainer (Adam, LR schedule, L1 warm-up, dead-feature tracking, activation-norm scaling
folded into the weights at the end) and the file format. Written here: the data provider over
cached activations (with neighbouring-token pairs for the temporal loss), initialising the decoder
bias at the data mean (sae-lens 6 no longer does), the Matryoshka TopK variant, and progress.

    saes/<sae_id>/   cfg.json + sae_weights.safetensors (SAE.load_from_disk reads it),
                     sparsity.safetensors, manifest.json (key, config, training)
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from loupe.core.config import Progress, no_progress
from loupe.services.activations import ActivationCache, ActivationCacheConfig
from loupe.services.saes.configs import SAETrainConfig
from loupe.storage.artifacts import atomic_dir, file_digest, save_tensors, write_manifest

WEIGHTS_FILE = "sae_weights.safetensors"  # sae-lens's name for an SAE's weights
WEIGHTS_DIGEST = "weights_sha256"  # the manifest's record of their digest

if TYPE_CHECKING:  # sae-lens is imported where it is used (a slow import); it ships no types, so these are Any
    from sae_lens import SAE
    from sae_lens.saes.sae import TrainingSAE, TrainStepInput, TrainStepOutput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig


def cache_config(presets: Sequence[SAETrainConfig], hook_name: str) -> ActivationCacheConfig:
    """One activation cache per hook, big enough for every preset that reads it."""
    ps = [p for p in presets if p.hook_name == hook_name]
    dtypes = {p.cache_dtype for p in ps}
    return ActivationCacheConfig(
        hook_name=hook_name,
        max_train_tokens=max(max(p.train_tokens, p.select_tokens) for p in ps),
        max_heldout_tokens=max(p.eval_tokens for p in ps),
        dtype="float32" if len(dtypes) > 1 else dtypes.pop(),
        first_position=all(p.first_position for p in ps),
    )


def make_training_sae(
    cfg: SAETrainConfig, d_in: int, metadata: dict[str, Any] | None = None, steps: int | None = None
) -> TrainingSAE:
    """A fresh sae-lens training SAE for `cfg` on a hook of width `d_in` (`steps`: of the run, for
    the L1 warm-up; default `cfg.steps`)."""
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    meta = SAEMetadata(hook_name=cfg.hook_name, **(metadata or {}))
    common = dict(
        d_in=d_in,
        d_sae=cfg.d_sae(d_in),
        dtype="float32",
        device="cpu",
        normalize_activations=cfg.normalize_activations,
        metadata=meta,
    )
    if cfg.architecture == "topk":
        return TopKTrainingSAE(TopKTrainingSAEConfig(k=cfg.k, aux_loss_coefficient=cfg.aux_loss_coefficient, **common))
    if cfg.architecture == "jumprelu":
        from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig

        return JumpReLUTrainingSAE(
            JumpReLUTrainingSAEConfig(
                jumprelu_sparsity_loss_mode="quadratic",
                target_l0=float(cfg.k),
                l0_warm_up_steps=int(cfg.l1_warm_up_fraction * (steps or cfg.steps)),
                **common,
            )
        )
    if cfg.architecture == "matryoshka":
        return _matryoshka_topk_class()(
            TopKTrainingSAEConfig(k=cfg.k, aux_loss_coefficient=cfg.aux_loss_coefficient, **common),
            widths=cfg.matryoshka_widths(cfg.d_sae(d_in)),
            temporal_coefficient=cfg.temporal_coefficient,
        )
    return StandardTrainingSAE(
        StandardTrainingSAEConfig(
            l1_coefficient=cfg.l1_coefficient,
            l1_warm_up_steps=int(cfg.l1_warm_up_fraction * (steps or cfg.steps)),
            **common,
        )
    )


def _matryoshka_topk_class() -> type[TopKTrainingSAE]:
    """sae-lens's TopKTrainingSAE plus Matryoshka losses (Bussmann et al. 2025; Nabeshima 2024).

    sae-lens ships Matryoshka losses only on BatchTopK, which is saved as a JumpReLU SAE whose
    global threshold lets L0 drift at inference (measured on a quarter-size demo world: 62 active
    features for k = 32). Here the same nested losses ride on per-token TopK instead: every prefix of the
    dictionary (widths w_1 < w_2 < ... < d_sae) must reconstruct the input from its own share of
    the k active features, which pushes general features (a whole domain's context) into the early
    latents instead of splitting them into token-level ones (feature absorption), while L0 stays
    exactly k. Only the training loss differs: the SAE is saved and loaded as a plain "topk" SAE.
    With `temporal_coefficient`, batches come as pairs [x_t; x_t+g] and the first prefix's codes
    pay for their squared change between the two (see the presets)."""
    from sae_lens.saes.topk_sae import TopKTrainingSAE, act_times_W_dec

    class MatryoshkaTopKTrainingSAE(TopKTrainingSAE):
        def __init__(
            self,
            cfg: TopKTrainingSAEConfig,
            widths: Sequence[int],
            use_error_term: bool = False,
            temporal_coefficient: float = 0.0,
        ) -> None:
            super().__init__(cfg, use_error_term)
            self.matryoshka_widths = list(widths)
            self.cfg.metadata.matryoshka_widths = list(widths)
            self.temporal_coefficient = temporal_coefficient

        def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
            out = super().training_forward_pass(step_input)
            acts = out.feature_acts
            decoded = self.b_dec
            prev = 0
            for width in self.matryoshka_widths[:-1]:  # the full width is the base loss
                decoded = decoded + act_times_W_dec(
                    acts[:, prev:width], self.W_dec[prev:width], self.cfg.rescale_acts_by_decoder_norm
                )
                loss = self.mse_loss_fn(decoded, step_input.sae_in).sum(dim=-1).mean()
                out.losses[f"inner_mse_loss_{width}"] = loss
                out.loss = out.loss + loss
                prev = width
            if self.temporal_coefficient > 0:
                # batches are [x_t; x_t+g] halves: the first prefix's codes should change slowly
                a, b = acts[:, : self.matryoshka_widths[0]].chunk(2)
                loss = self.temporal_coefficient * (a - b).pow(2).sum(-1).mean()
                out.losses["temporal_loss"] = loss
                out.loss = out.loss + loss
            return out

    return MatryoshkaTopKTrainingSAE


def _batches(acts: Tensor, batch_size: int, seed: int) -> Iterator[Tensor]:
    """Endless float32 batches of `batch_size` <= len(acts) tokens, a fresh seeded permutation each epoch."""
    g = torch.Generator().manual_seed(seed)
    n = acts.shape[0]
    while True:
        perm = torch.randperm(n, generator=g)
        for s in range(0, n - batch_size + 1, batch_size):  # the ragged tail waits for the next epoch
            yield acts[perm[s : s + batch_size]].float()


def _pair_batches(acts: Tensor, seq: Tensor, pos: Tensor, batch_size: int, seed: int, gap: int = 1) -> Iterator[Tensor]:
    """Endless batches [x_t; x_t+g] of batch_size // 2 token pairs of one sequence each, g uniform in 1..gap."""
    if not bool((seq[1:] == seq[:-1]).any()):  # else the draw below would never fill a batch
        raise ValueError("the temporal loss needs sequences of at least two tokens")
    g = torch.Generator().manual_seed(seed)
    n = seq.numel()
    half = batch_size // 2
    while True:
        i = torch.randint(0, n, (half * 4,), generator=g)
        j = (i + torch.randint(1, gap + 1, i.shape, generator=g)).clamp(max=n - 1)
        ok = (seq[j] == seq[i]) & (pos[j] > pos[i])
        i, j = i[ok][:half], j[ok][:half]
        if i.numel() == half:
            yield torch.cat([acts[i], acts[j]]).float()


def fit_sae(
    cfg: SAETrainConfig,
    acts: Tensor,  # [n_tokens, d_in], any float dtype
    progress: Progress = no_progress,
    metadata: dict[str, Any] | None = None,
    device: str = "cpu",
    seq: Tensor | None = None,
    pos: Tensor | None = None,
) -> tuple[TrainingSAE, dict[str, Any]]:
    """Train `cfg` on `acts` with sae-lens's SAETrainer; returns (training SAE, training stats).
    The activation-norm scaling is folded into the weights, so the SAE takes raw activations."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    if cfg.temporal_coefficient > 0 and (seq is None or pos is None):
        raise ValueError(f"{cfg.name}: the temporal loss needs each token's sequence and position")
    t0 = time.monotonic()
    torch.manual_seed(cfg.seed)
    d_in = acts.shape[1]
    batch_size = min(cfg.batch_size, acts.shape[0])
    steps = max(1, cfg.train_tokens // batch_size)
    sae = make_training_sae(cfg, d_in, metadata, steps)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * batch_size,
        train_batch_size_samples=batch_size,
        lr=cfg.lr,
        lr_end=cfg.lr,
        lr_scheduler_name="constant",
        lr_warm_up_steps=int(cfg.lr_warm_up_fraction * steps),
        lr_decay_steps=int(cfg.lr_decay_fraction * steps),
        dead_feature_window=max(1, cfg.dead_feature_tokens // batch_size),
        feature_sampling_window=steps,  # one window: its firing rates go into the metadata
        device=device,
        logger=LoggingConfig(log_to_wandb=False),
    )
    done = {"steps": 0}

    def provider() -> Iterator[Tensor]:
        if cfg.temporal_coefficient > 0:
            assert seq is not None and pos is not None  # checked on entry
            batches = _pair_batches(acts, seq, pos, batch_size, cfg.seed, cfg.temporal_gap)
        else:
            batches = _batches(acts, batch_size, cfg.seed)
        for b in batches:
            yield b
            done["steps"] = min(done["steps"] + 1, steps)
            progress(done["steps"], steps, f"{cfg.name}: step {done['steps']}/{steps}")

    trainer = SAETrainer(trainer_cfg, sae, provider())
    sample = acts[: min(acts.shape[0], 65_536)].float()
    if cfg.normalize_activations == "expected_average_only_in":
        # sae-lens's own estimate (mean norm -> sqrt(d_in)); set before fit(), which then keeps it
        trainer.activation_scaler.estimate_scaling_factor(
            d_in, iter(sample.split(batch_size)), math.ceil(sample.shape[0] / batch_size)
        )
    with torch.no_grad():
        # decoder bias at the (scaled) data mean: the SAE then spends its features on deviations
        sae.b_dec.data = trainer.activation_scaler.scale(sample).mean(0).to(sae.b_dec.dtype)
        if cfg.architecture == "jumprelu":
            # thresholds start where about k features fire per token: from sae-lens's flat 0.01 the
            # threshold moves about lr per step, far too slowly for a short budget
            _, pre = sae.encode_with_hidden_pre(trainer.activation_scaler.scale(sample[:4096]))
            q = 1 - min(1.0, cfg.k / sae.cfg.d_sae)
            sae.threshold.data = torch.quantile(pre.float(), q, dim=0).clamp(min=0).to(sae.threshold.dtype)
    progress(0, steps, f"{cfg.name}: training {cfg.architecture} SAE, d_sae {sae.cfg.d_sae}")
    trainer.fit()
    seconds = time.monotonic() - t0
    stats = {
        "steps": steps,
        "batch_size": batch_size,
        "tokens": steps * batch_size,
        "cached_tokens": int(acts.shape[0]),
        "seconds": round(seconds, 1),
        "tokens_per_s": round(steps * batch_size / seconds),
        "train_l0": float(trainer.feature_sparsity.sum()) if trainer.n_frac_active_samples else None,
        "train_dead": int(trainer.dead_neurons.sum()),
        "log_feature_sparsity": trainer.log_feature_sparsity,
    }
    if cfg.architecture == "matryoshka":
        stats["matryoshka_widths"] = list(sae.matryoshka_widths)
    return sae, stats


def train_sae(
    cfg: SAETrainConfig,
    cache: ActivationCache,
    output: Path,
    key: str = "",
    progress: Progress = no_progress,
    metadata: dict[str, Any] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train `cfg` on the cache's train split and save it atomically under `output` in sae-lens's
    format (cfg.json, sae_weights.safetensors; `SAE.load_from_disk` reads it), with
    sparsity.safetensors and a manifest. Returns the manifest."""
    if cache.hook_name != cfg.hook_name:
        raise ValueError(f"cache holds {cache.hook_name}, preset {cfg.name} wants {cfg.hook_name}")
    temporal = cfg.temporal_coefficient > 0  # only the temporal loss pairs tokens by sequence
    t = cache.load("train", max_tokens=cfg.train_tokens, fields=["acts", "seq", "pos"] if temporal else ["acts"])
    sae, stats = fit_sae(cfg, t["acts"], progress, metadata, device, seq=t.get("seq"), pos=t.get("pos"))
    sparsity = stats.pop("log_feature_sparsity")
    manifest = {
        "key": key,
        "name": cfg.name,
        "hook_name": cfg.hook_name,
        "architecture": cfg.architecture,
        "d_in": int(sae.cfg.d_in),
        "d_sae": int(sae.cfg.d_sae),
        "config": cfg.to_dict(),
        "training": stats,
        **(metadata or {}),
    }
    with atomic_dir(Path(output)) as tmp:
        sae.save_inference_model(tmp)
        save_tensors(tmp / "sparsity.safetensors", {"sparsity": sparsity})
        manifest[WEIGHTS_DIGEST] = file_digest(tmp / WEIGHTS_FILE)  # the SAE's version follows it
        write_manifest(tmp, manifest)
    return manifest


def load_sae(path: Path | str, device: str = "cpu") -> SAE:
    """An SAE saved by `train_sae` (or any sae-lens SAE directory) as an inference `SAE`."""
    from sae_lens import SAE

    return SAE.load_from_disk(str(path), device=device).eval()
