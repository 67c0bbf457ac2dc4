"""SAE configs as data (as sae-lens does): what to train, and how to build dashboards."""

from __future__ import annotations

from dataclasses import dataclass

from loupe.core.config import Config

ARCHITECTURES = ("standard", "topk", "matryoshka", "jumprelu")


@dataclass(frozen=True)
class SAETrainConfig(Config):
    """One SAE to train. Sizes are relative (`expansion` x the hook's width) so a preset fits any model."""

    name: str  # preset name; the SAE id is "<model_id>-<name>"
    hook_name: str
    architecture: str = "topk"  # "topk" (TopK + AuxK), "standard" (ReLU + L1),
    # "matryoshka" (TopK + nested Matryoshka losses; saved as topk) or "jumprelu" (sae-lens's JumpReLU
    # with Gemma Scope 2's quadratic penalty around L0 = k)
    expansion: int = 8  # d_sae = expansion * d_in
    k: int = 32  # topk, matryoshka: active features per token; jumprelu: the target L0
    matryoshka_fractions: tuple[float, ...] = (1 / 32,)  # matryoshka: nested prefixes, as shares of d_sae
    aux_loss_coefficient: float = 1 / 32  # topk, matryoshka: AuxK weight (Gao et al. 2024)
    l1_coefficient: float = 5.0  # standard: L1 weight on normalised activations
    l1_warm_up_fraction: float = 0.05  # standard, jumprelu: the sparsity penalty ramps up over this share of steps
    lr: float = 1e-3
    lr_warm_up_fraction: float = 0.02
    lr_decay_fraction: float = 0.2  # linear decay to 0 over the last share of steps
    batch_size: int = 4096
    train_tokens: int = 400_000  # tokens seen in training (the cache is cycled if it has fewer)
    dead_feature_tokens: int = 100_000  # no firing for this many tokens: dead (AuxK revives it)
    normalize_activations: str = "expected_average_only_in"
    temporal_coefficient: float = 0.0  # matryoshka: weight of the slowness loss on the first prefix
    temporal_gap: int = 1  # matryoshka: pairs (t, t+g) of one sequence, g in 1..temporal_gap
    seed: int = 0
    cache_dtype: str = "float32"  # how the activations are stored on disk
    eval_tokens: int = 100_000  # held-out tokens measured (first of the split)
    select_tokens: int = 100_000  # train tokens on which each domain's best feature is chosen
    first_position: bool = True  # train and measure on each sequence's first position too (see ActivationCacheConfig)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, not {self.architecture!r}")
        if self.temporal_coefficient > 0 and self.architecture != "matryoshka":
            raise ValueError("temporal_coefficient needs the matryoshka architecture (it acts on the first prefix)")
        if self.temporal_coefficient > 0 and not any(0 < f < 1 for f in self.matryoshka_fractions):
            # with no inner level the "first prefix" would be the whole dictionary: every latent slowed
            raise ValueError("the temporal loss needs an inner Matryoshka level (a fraction in (0, 1))")
        if self.temporal_gap < 1:
            raise ValueError(f"temporal_gap must be >= 1, not {self.temporal_gap}")

    def d_sae(self, d_in: int) -> int:
        return self.expansion * d_in

    def matryoshka_widths(self, d_sae: int) -> list[int]:
        widths = sorted({max(1, round(f * d_sae)) for f in self.matryoshka_fractions if 0 < f < 1})
        return widths + [d_sae]

    @property
    def steps(self) -> int:
        return max(1, self.train_tokens // self.batch_size)


@dataclass(frozen=True)
class DashboardConfig(Config):
    max_tokens: int = 300_000  # train-split tokens passed through the SAE
    top_k: int = 20  # top activating examples per feature
    n_intervals: int = 10  # interval samples: equal bins of (0, max activation]
    per_interval: int = 2  # examples drawn per bin
    hist_bins: int = 40
    left: int = 16  # context window: tokens before and after the example token
    right: int = 6
    n_logits: int = 10
    n_neighbours: int = 10
    n_neurons: int = 8
    n_tokens: int = 8  # enriched tokens kept per feature
    batch_size: int = 4096
    seed: int = 0

    @property
    def n_examples(self) -> int:
        return self.top_k + self.n_intervals * self.per_interval
