"""Generation: validate against the model's context, decode through the TransformerBridge."""

from __future__ import annotations

import math
from dataclasses import dataclass

from loupe.core.generation import decode
from loupe.errors import Unprocessable
from loupe.services.models import LoadedModel, ModelService


@dataclass
class Completion:
    completion: str
    tokens: list[str]
    token_ids: list[int]


class GenerationService:
    def __init__(self, models: ModelService, max_new_tokens_limit: int):
        self.models = models
        self.limit = max_new_tokens_limit

    def generate(self, prompt: str, max_new_tokens: int, temperature: float, seed: int | None,
                 model_id: str | None = None, interventions: list | None = None) -> tuple[LoadedModel, int, Completion, Completion | None]:
        if not math.isfinite(temperature) or temperature < 0:
            raise Unprocessable(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
        if max_new_tokens > self.limit:
            raise Unprocessable(f"max_new_tokens is {max_new_tokens}; the limit is {self.limit}")
        if interventions:
            raise Unprocessable("interventions are not available yet on this server; send none")
        lm = self.models.get(model_id)
        ids = lm.encode_prompt(prompt)
        if len(ids) + max_new_tokens > lm.n_ctx:
            raise Unprocessable(
                f"the prompt is {len(ids)} tokens and max_new_tokens is {max_new_tokens}: together more than "
                f"the model's context of {lm.n_ctx} tokens; shorten the prompt or ask for fewer tokens"
            )
        out = self.complete(lm, ids, max_new_tokens, temperature, seed)
        return lm, len(ids), out, None

    @staticmethod
    def complete(lm: LoadedModel, ids: list[int], max_new_tokens: int, temperature: float, seed: int | None) -> Completion:
        stop = tuple(t for t in (lm.tokenizer.eos_token_id,) if t is not None)
        new = decode(lm.bridge, ids, max_new_tokens, temperature, seed, stop_ids=stop, n_ctx=lm.n_ctx)
        return Completion(
            completion=lm.tokenizer.decode(new),
            tokens=[lm.tokenizer.decode([t]) for t in new],
            token_ids=new,
        )
