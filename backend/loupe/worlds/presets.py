"""The analyses each built-in world asks for, as data: SAE presets, dashboard, steering, influence
and training-Jacobian settings. `demo` is the default world; `micro` is the seconds-long world the
tests build (the same code paths at tiny sizes). How the demo presets were chosen: bench/RESULTS.md."""

from __future__ import annotations

from loupe.services.container import Analyses
from loupe.services.influence.config import InfluenceConfig
from loupe.services.jacobian.runs import PAPER, RunSettings
from loupe.services.saes.configs import DashboardConfig, SAETrainConfig
from loupe.services.steering.build import SteeringConfig

# Demo world (d_model 128, d_mlp 512, 3 layers, about 2M training tokens):
#   mlp0:   blocks.0.mlp.hook_post, TopK, 8x -> 4,096 features (Towards Monosemanticity: 512 neurons ->
#           4,096 features); k = 32 meets L0 <= 32 by construction; AuxK keeps dead features down.
#   resid2: blocks.2.hook_resid_pre (the middle of the residual stream, where the refusal direction is),
#           TopK with one Matryoshka level (the first 1/32 of the latents must reconstruct alone) and a
#           temporal (slowness) loss on that level, 8x -> 1,024.
SAE_PRESETS: dict[str, tuple[SAETrainConfig, ...]] = {
    "demo": (
        SAETrainConfig(
            "mlp0",
            "blocks.0.mlp.hook_post",
            "topk",
            expansion=8,
            k=32,
            lr=1e-3,
            batch_size=4096,
            train_tokens=400_000,
            aux_loss_coefficient=1 / 32,
            cache_dtype="float16",
        ),
        SAETrainConfig(
            "resid2",
            "blocks.2.hook_resid_pre",
            "matryoshka",
            expansion=8,
            k=32,
            lr=2e-3,
            matryoshka_fractions=(1 / 32,),
            batch_size=2048,
            train_tokens=600_000,
            aux_loss_coefficient=1.0,
            temporal_coefficient=1.0,
            cache_dtype="float16",
        ),
    ),
    # SmolLM2-135M (d_model 576, 30 layers): one TopK SAE on the middle of the residual stream
    "smollm2": (
        SAETrainConfig(
            "resid15",
            "blocks.15.hook_resid_pre",
            "topk",
            expansion=8,
            k=32,
            lr=1e-3,
            batch_size=4096,
            train_tokens=600_000,
            # a shorter dead window and a stronger AuxK than the demo's: with 1/32 and 200k, 11.2% of
            # the latents were dead on held-out tokens (bench/RESULTS.md)
            dead_feature_tokens=50_000,
            aux_loss_coefficient=1 / 8,
            cache_dtype="float16",
            eval_tokens=8_192,
            select_tokens=50_000,
            first_position=False,  # the attention sink: a residual norm ~150x the other positions'
        ),
    ),
    # micro world (tests, seconds): the standard and Matryoshka paths, tiny budgets
    "micro": (
        SAETrainConfig(
            "mlp0",
            "blocks.0.mlp.hook_post",
            "standard",
            expansion=2,
            l1_coefficient=2.0,
            lr=3e-3,
            batch_size=512,
            train_tokens=20_480,
            dead_feature_tokens=8_192,
            eval_tokens=4_096,
            select_tokens=8_192,
        ),
        SAETrainConfig(
            "resid1",
            "blocks.1.hook_resid_pre",
            "matryoshka",
            expansion=4,
            k=8,
            lr=3e-3,
            matryoshka_fractions=(1 / 16,),
            batch_size=512,
            train_tokens=20_480,
            dead_feature_tokens=8_192,
            aux_loss_coefficient=1.0,
            temporal_coefficient=1.0,
            eval_tokens=4_096,
            select_tokens=8_192,
        ),
    ),
}


DASHBOARD_PRESETS: dict[str, DashboardConfig] = {
    "demo": DashboardConfig(),
    "smollm2": DashboardConfig(max_tokens=200_000),
    "micro": DashboardConfig(
        max_tokens=8_192, top_k=5, n_intervals=4, per_interval=1, left=8, right=3, batch_size=1024
    ),
}


INFLUENCE_PRESETS: dict[str, InfluenceConfig | None] = {
    # every one of the demo model's 395,136 coordinates of 17,124 sequences at 2 bits, 1.9 GB
    "demo": InfluenceConfig("demo", covariance_max_examples=1024, lambda_max_examples=512, batch_size=32),
    "smollm2": None,  # issue 18: attribution on a real model
    "micro": InfluenceConfig(
        "micro",
        covariance_max_examples=128,
        lambda_max_examples=64,
        batch_size=128,
        cache_dim=256,
        shard_rows=64,
        tfidf_candidates=32,
        precise_candidates=8,
        rescore_candidates=16,
    ),
}

# The training-Jacobian run each world's build computes: the paper's setting for the demo world (about
# 10 minutes on 2 cores in float64), a few-second one for the test world.
JACOBIAN_RUNS: dict[str, RunSettings | None] = {
    "smollm2": None,  # the training Jacobian is of the paper's MLPs, built once with the demo world
    "demo": RunSettings.from_dict(PAPER),
    "micro": RunSettings.from_dict({**PAPER, "width": 4, "epochs": 1, "dtype": "float32"}),
}


# SmolLM2 runs about 1/100 of the demo model's speed here: fewer instructions for the means and scores
# and every third layer's candidates: 12 hooks x 6 ChatML post-instruction positions
STEERING_PRESETS: dict[str, SteeringConfig] = {"smollm2": SteeringConfig(n_direction=96, n_select=16, layer_stride=3)}


def analyses(world: str, eval_limit: int | None) -> Analyses:
    """The analyses of a built-in world (`eval_limit`: the world's cap on held-out instructions)."""
    steering = STEERING_PRESETS.get(world) or (
        SteeringConfig() if eval_limit is None else SteeringConfig(2 * eval_limit, eval_limit)
    )
    return Analyses(
        steering=steering,
        saes=SAE_PRESETS[world],
        dashboards=DASHBOARD_PRESETS[world],
        influence=INFLUENCE_PRESETS[world],
        build_influence=world != "micro",  # the tests build the micro world's influence where they need it
        jacobian=JACOBIAN_RUNS[world],
    )
