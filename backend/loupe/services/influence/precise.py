"""kronfluence's exact EK-FAC pairwise scores (precise mode, and the check of Loupe's exact path)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from loupe.core import influence as I
from loupe.services.influence.config import ANALYSIS_NAME, FACTORS_NAME
from loupe.services.influence.hooks import HookCapture, sae_feature_value

# An SAE feature measurement for kronfluence: ("feature", the SAE, its hook, the feature, the token position).
FeatureMeasure = tuple[str, Any, str, int, int]


def precise_scores(
    factors_dir: Path,
    load_model: Callable[[], tuple[Any, list[str]]],
    tokens: dict[str, Tensor],
    q_ids: Tensor,
    q_mask: Tensor | None,
    train_idx: Tensor,
    kf_measure: FeatureMeasure | None = None,
    query_rank: int | None = None,
    per_token: bool = False,
    batch_size: int = 16,
) -> Tensor:
    """kronfluence's exact EK-FAC pairwise scores of one query against `train_idx`, in Loupe's sign and
    normalisation ([len(train_idx)] or, with per_token, [len(train_idx), n_ctx]). Damping: kronfluence's
    `damping_factor=None`, which is exactly 0.1 x mean(Lambda) per layer (its HEURISTIC_DAMPING_SCALE)."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import ScoreArguments
    from kronfluence.utils.constants import HEURISTIC_DAMPING_SCALE

    assert HEURISTIC_DAMPING_SCALE == I.DAMPING_SCALE
    model, names = load_model()  # a fresh copy: kronfluence wraps its tracked layers in place
    measurement: Callable[[dict[str, Tensor], torch.nn.Module], Tensor] | None = None
    if kf_measure is not None:
        _, sae, hook, feat, pos = kf_measure

        def feature_measurement(batch: dict[str, Tensor], m: torch.nn.Module) -> Tensor:
            with HookCapture(m, hook) as cap:
                logits: Tensor = m(input_ids=batch["input_ids"]).logits
            # + 0 x logits: layers downstream of the hook get a zero gradient (kronfluence needs one
            # for every tracked module) without changing the measurement
            return sae_feature_value(sae, cap.captured, feat)[:, pos].sum() + 0.0 * logits.sum()

        measurement = feature_measurement

    task = I.make_task(names, measurement)
    model = prepare_model(model, task)
    n_train = tokens["input_ids"].shape[0]
    if q_mask is None:
        q_mask = torch.zeros_like(q_ids, dtype=torch.bool)
    query = I.SequenceDataset(q_ids, q_mask, real=torch.ones_like(q_ids, dtype=torch.bool))
    train = I.SequenceDataset(tokens["input_ids"], tokens["loss_mask"], tokens.get("real"))
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(Path(d) / ANALYSIS_NAME)
        os.symlink(
            (Path(factors_dir) / "kronfluence" / ANALYSIS_NAME / f"factors_{FACTORS_NAME}").resolve(),
            Path(d) / ANALYSIS_NAME / f"factors_{FACTORS_NAME}",
        )
        an = Analyzer(ANALYSIS_NAME, model, task, cpu=True, disable_tqdm=True, output_dir=d)
        sargs = ScoreArguments(
            damping_factor=None, compute_per_token_scores=per_token, query_gradient_low_rank=query_rank
        )
        an.compute_pairwise_scores(
            "q",
            FACTORS_NAME,
            query,
            train,
            per_device_query_batch_size=1,
            per_device_train_batch_size=batch_size,
            train_indices=train_idx.tolist(),
            score_args=sargs,
            overwrite_output_dir=True,
        )
        s: Tensor = an.load_pairwise_scores("q")["all_modules"][0]
    return -s.float() / n_train
