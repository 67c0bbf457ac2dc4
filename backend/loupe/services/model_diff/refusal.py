"""The refusal direction of a parent and of its fine-tune, compared per layer: the difference of means
between harmful and harmless instructions (Arditi et al. 2024) at every candidate (block, post-instruction
position) of the refusal search (services/steering/direction.py), on both models from the same prompts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from loupe.core import massive as M
from loupe.core import model_diff as D
from loupe.core.config import Progress, no_progress
from loupe.services.models import LoadedModel
from loupe.services.steering.direction import (
    candidate_hooks,
    encode_prompts,
    massive_summary,
    post_instruction_ids,
    post_instruction_means,
    with_post_instruction,
)


def refusal_cosines(
    parent: LoadedModel,
    child: LoadedModel,
    harmful: Sequence[str],
    harmless: Sequence[str],
    n_layers: int,
    layer_stride: int = 1,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Both models' directions at every candidate and their cosines (null where a direction is zero), with
    each direction's norm; skipped (with the reason) where the models write chats differently."""
    if parent.chat.post_instruction != child.chat.post_instruction:
        return {"skipped": "the two models write a chat prompt differently (their chat templates differ)"}
    enc = {
        side: with_post_instruction(parent, encode_prompts(parent, xs))
        for side, xs in (("harmful", harmful), ("harmless", harmless))
    }
    if not enc["harmful"] or not enc["harmless"]:
        return {"skipped": "no instruction ends in the chat format's post-instruction tokens"}
    hooks = candidate_hooks(n_layers, layer_stride)
    names = [h for h, _ in hooks]
    n_pos = len(post_instruction_ids(parent))
    progress(0, 2, "refusal directions: the parent")
    means_p, stats_p = post_instruction_means(parent, enc, names, n_pos)
    progress(1, 2, "refusal directions: the child")
    means_c, stats_c = post_instruction_means(child, enc, names, n_pos)
    # a coordinate massive in either model is left out of both (as the direction search does)
    massive = sorted(set(massive_summary(stats_p, names)["dims"]) | set(massive_summary(stats_c, names)["dims"]))
    rows = []
    for hook, depth in hooks:
        r_p = M.without_dims(means_p["harmful"][hook] - means_p["harmless"][hook], massive)  # [n_pos, d]
        r_c = M.without_dims(means_c["harmful"][hook] - means_c["harmless"][hook], massive)
        rows.append(
            {
                "hook": hook,
                "layer": depth,
                "cosine": [x if math.isfinite(x) else None for x in D.direction_cosines(r_p, r_c).tolist()],
                "norm_parent": r_p.norm(dim=-1).tolist(),
                "norm_child": r_c.norm(dim=-1).tolist(),
            }
        )
    progress(2, 2, "refusal directions: done")
    return {
        "skipped": None,
        "n_harmful": len(enc["harmful"]),
        "n_harmless": len(enc["harmless"]),
        "positions": parent.token_strings(post_instruction_ids(parent)),
        "massive_dims": massive,
        "layers": rows,
    }
