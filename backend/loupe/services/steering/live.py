"""Live editing: the next-token distribution after a prompt without and with interventions, their
KL, and optionally both greedy continuations (POST /api/steering/next-token)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from loupe.core import steering as S
from loupe.errors import Unprocessable
from loupe.services.generation import Completion, GenerationService
from loupe.services.models import LoadedModel, ModelService, locked_forward
from loupe.services.steering.interventions import PlanBuilder

MAX_CONTINUE_TOKENS = 64  # live editing's greedy continuations (POST /api/steering/next-token)


_CONTINUATIONS_KEPT = 64


def default_continuation(lm: LoadedModel, ids: list[int], n: int) -> Completion:
    """The unsteered greedy continuation (GenerationService.complete without hooks), kept on the loaded
    model for the last few prompts (weights never change in place; a reloaded model starts empty)."""
    key, kept = (tuple(ids), int(n)), lm.continuations
    with lm.lock:
        if key in kept:
            kept.move_to_end(key)
            hit: Completion = kept[key]
            return hit
    out = GenerationService.complete(lm, ids, int(n), 0.0, None)
    with lm.lock:
        kept[key] = out
        while len(kept) > _CONTINUATIONS_KEPT:
            kept.popitem(last=False)
    return out


class LiveEditService:
    def __init__(self, models: ModelService, plans: PlanBuilder, max_prompt_chars: int):
        self.models = models
        self.plans = plans
        self.max_prompt_chars = max_prompt_chars

    def next_token(
        self,
        prompt: str | None,
        interventions: Sequence[dict[str, Any]],
        top_k: int = 10,
        model_id: str | None = None,
        continue_tokens: int = 0,
        messages: Sequence[Mapping[str, str]] | None = None,
    ) -> dict[str, Any]:
        """The next-token distribution after `prompt` without and with `interventions` (live editing):
        top tokens of each, and KL(default || steered). With `continue_tokens` > 0, also the greedy
        continuations of that many tokens without and with the interventions, decoded exactly as
        POST /api/generate does (GenerationService.complete, the hooks on every forward pass); they stop
        early at the end-of-text token or at the model's context. `messages` instead of `prompt`: a chat,
        rendered with the model's chat template (LoadedModel.render_messages)."""
        chars = len(prompt) if prompt is not None else sum(len(m["content"]) for m in messages or [])
        if chars > self.max_prompt_chars:
            raise Unprocessable(f"the prompt has {chars:,} characters; the limit is {self.max_prompt_chars:,}")
        if not 0 <= continue_tokens <= MAX_CONTINUE_TOKENS:
            raise Unprocessable(f"continue_tokens is {continue_tokens}; use 0..{MAX_CONTINUE_TOKENS}")
        lm = self.models.get(model_id)
        text, ids = lm.prompt_ids(prompt, messages)
        if len(ids) > lm.n_ctx:
            raise Unprocessable(f"the prompt is {len(ids)} tokens; the model's context is {lm.n_ctx}")
        plan = self.plans.build(lm, interventions, len(ids)) if interventions else []
        x = torch.tensor([ids])
        base = locked_forward(lm)(x)[0, -1].double()
        steered = locked_forward(lm, plan)(x)[0, -1].double() if plan else base

        def top(logits: Tensor) -> list[dict[str, Any]]:
            p = torch.softmax(logits, -1)
            v, i = p.topk(min(top_k, p.shape[-1]))
            return [
                {"id": int(t), "token": lm.tokenizer.decode([int(t)]), "prob": float(q), "logit": float(logits[t])}
                for q, t in zip(v, i)
            ]

        out = {
            "model_id": lm.id,
            "prompt_tokens": lm.token_strings(ids),
            "rendered_prompt": text,
            "prompt_token_ids": list(ids),
            "default": top(base),
            "steered": top(steered),
            "kl": float(S.kl_divergence(base[None], steered[None])[0]),
        }
        if continue_tokens > 0:
            default_c = default_continuation(lm, ids, continue_tokens)
            steered_c = (
                GenerationService.complete(lm, ids, int(continue_tokens), 0.0, None, plan) if plan else default_c
            )
            out["default_continuation"] = default_c.completion
            out["steered_continuation"] = steered_c.completion
        return out
