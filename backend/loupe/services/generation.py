"""Generation: validate against the model's context, decode through the TransformerBridge."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from loupe.core.generation import NonFiniteLogits, decode, decode_iter
from loupe.core.steering import HookPlan
from loupe.errors import Unprocessable
from loupe.services.models import LoadedModel, ModelService, decoding_forward, locked_forward
from loupe.services.steering.interventions import PlanBuilder


@dataclass
class Completion:
    completion: str
    tokens: list[str]
    token_ids: list[int]


@dataclass
class Prepared:
    """A validated request: the model, the prompt's text (a chat rendered with the model's template) and
    ids, and the steered hook plan (None: no steering)."""

    lm: LoadedModel
    ids: list[int]
    max_new_tokens: int
    temperature: float
    seed: int | None
    plan: HookPlan | None
    text: str = ""

    def prompt_fields(self) -> dict[str, Any]:
        """What a response says about the prompt: its length, the text the model read, its tokens."""
        return {
            "prompt_tokens": len(self.ids),
            "rendered_prompt": self.text,
            "prompt_token_ids": list(self.ids),
            "prompt_token_strings": self.lm.token_strings(self.ids),
        }


@contextmanager
def _finite_logits() -> Iterator[None]:
    """NaN logits (activations pushed past float range) -> a 422 that says what to change."""
    try:
        yield
    except NonFiniteLogits as exc:
        raise Unprocessable(
            f"{exc}: the interventions (alpha, value) are too large for this model; lower them"
        ) from None


class GenerationService:
    def __init__(self, models: ModelService, plans: PlanBuilder, max_new_tokens_limit: int):
        self.models = models
        self.plans = plans
        self.limit = max_new_tokens_limit

    def prepare(
        self,
        prompt: str | None,
        max_new_tokens: int,
        temperature: float,
        seed: int | None,
        model_id: str | None = None,
        interventions: Sequence[dict[str, Any]] | None = None,
        messages: Sequence[Mapping[str, str]] | None = None,
    ) -> Prepared:
        """Check everything a generation needs before any token is produced (4xx, never a 500). The prompt
        is raw text (`prompt`) or a chat (`messages`, rendered with the model's chat template), exactly one."""
        if not math.isfinite(temperature) or temperature < 0:
            raise Unprocessable(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
        if max_new_tokens > self.limit:
            raise Unprocessable(f"max_new_tokens is {max_new_tokens}; the limit is {self.limit}")
        lm = self.models.get(model_id)
        text, ids = lm.prompt_ids(prompt, messages)
        if len(ids) + max_new_tokens > lm.n_ctx:
            raise Unprocessable(
                f"the prompt is {len(ids)} tokens and max_new_tokens is {max_new_tokens}: together more than "
                f"the model's context of {lm.n_ctx} tokens; shorten the prompt or ask for fewer tokens"
            )
        plan = self.plans.build(lm, interventions, len(ids)) if interventions else None
        return Prepared(lm, ids, max_new_tokens, temperature, seed, plan, text)

    def generate(
        self,
        prompt: str | None,
        max_new_tokens: int,
        temperature: float,
        seed: int | None,
        model_id: str | None = None,
        interventions: Sequence[dict[str, Any]] | None = None,
        messages: Sequence[Mapping[str, str]] | None = None,
    ) -> tuple[Prepared, Completion, Completion | None]:
        p = self.prepare(prompt, max_new_tokens, temperature, seed, model_id, interventions, messages)
        with _finite_logits():
            out = self.complete(p.lm, p.ids, p.max_new_tokens, p.temperature, p.seed)
            steered = (
                None if p.plan is None else self.complete(p.lm, p.ids, p.max_new_tokens, p.temperature, p.seed, p.plan)
            )
        return p, out, steered

    def stream(self, p: Prepared) -> Iterator[dict[str, Any]]:
        """Events as tokens are generated, default and steered interleaved step by step:
        {"event": "start"}, {"event": "token", "stream", "index", "token"}..., {"event": "done", ...}.
        Hooks are attached per forward pass, so a client that goes away leaves none behind."""
        lm = p.lm
        stop = tuple(t for t in (lm.tokenizer.eos_token_id,) if t is not None)
        streams = {
            "default": decode_iter(
                decoding_forward(lm), p.ids, p.max_new_tokens, p.temperature, p.seed, stop_ids=stop, n_ctx=lm.n_ctx
            )
        }
        if p.plan is not None:
            streams["steered"] = decode_iter(
                locked_forward(lm, p.plan),
                p.ids,
                p.max_new_tokens,
                p.temperature,
                p.seed,
                stop_ids=stop,
                n_ctx=lm.n_ctx,
            )
        got: dict[str, list[int]] = {k: [] for k in streams}
        yield {"event": "start", "model_id": lm.id, **p.prompt_fields(), "streams": list(streams)}
        live = dict(streams)
        while live:
            for name in list(live):
                with _finite_logits():
                    tok = next(live[name], None)
                if tok is None:
                    del live[name]
                    continue
                got[name].append(tok)
                yield {
                    "event": "token",
                    "stream": name,
                    "index": len(got[name]) - 1,
                    "token": lm.tokenizer.decode([tok]),
                }
        done = {k: self._completion(lm, v) for k, v in got.items()}
        yield {
            "event": "done",
            "model_id": lm.id,
            "prompt_tokens": len(p.ids),
            **{
                k: ({"completion": done[k].completion, "tokens": done[k].tokens} if k in done else None)
                for k in ("default", "steered")
            },
        }

    @staticmethod
    def _completion(lm: LoadedModel, new: list[int]) -> Completion:
        return Completion(completion=lm.tokenizer.decode(new), tokens=lm.token_strings(new), token_ids=new)

    @staticmethod
    def complete(
        lm: LoadedModel,
        ids: list[int],
        max_new_tokens: int,
        temperature: float,
        seed: int | None,
        plan: HookPlan | None = None,
    ) -> Completion:
        """Decode through the model's lock; `plan`'s hooks are attached for each forward pass only."""
        stop = tuple(t for t in (lm.tokenizer.eos_token_id,) if t is not None)
        new = decode(decoding_forward(lm, plan), ids, max_new_tokens, temperature, seed, stop_ids=stop, n_ctx=lm.n_ctx)
        return GenerationService._completion(lm, new)
