import json
import logging
from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, model_validator

from loupe.api.bounds import MAX_FEATURES, MAX_NEW_TOKENS, MAX_TEMPERATURE, Magnitude, Position, Seed
from loupe.api.deps import GenerationDep
from loupe.api.errors import errors
from loupe.errors import LoupeError

# 404: an unknown model, vector or SAE; 409: one not built yet
log = logging.getLogger("loupe.api")

# 404: an unknown model, vector or SAE; 409: one not built yet
router = APIRouter(tags=["generate"], responses=errors(404, 409))

FeatureId = Annotated[int, Field(ge=0, le=MAX_FEATURES - 1)]


class AblateDirection(BaseModel):
    """Directional ablation h - (h . r^) r^ at every residual write, every position (Arditi et al. 2024)."""

    kind: Literal["ablate_direction"]
    vector_id: str


class AddDirection(BaseModel):
    """Activation addition h + alpha r at one residual hook (default: the vector's), every position."""

    kind: Literal["add_direction"]
    vector_id: str
    alpha: Magnitude = 1.0
    hook: str | None = None


class Ace(BaseModel):
    """Affine concept editing h - ((h - mu-) . r^) r^ + alpha r at the vector's hook (Marshall et al. 2024)."""

    kind: Literal["ace"]
    vector_id: str
    alpha: Magnitude = 1.0


class SaeFeatureAdd(BaseModel):
    """h + value * W_dec[feature] at the SAE's hook, every position."""

    kind: Literal["sae_feature_add"]
    sae_id: str
    feature: FeatureId
    value: Magnitude


class SaeFeatureClamp(BaseModel):
    """Feature set to value, the SAE's reconstruction error kept: h + (value - f(h)) W_dec[feature]."""

    kind: Literal["sae_feature_clamp"]
    sae_id: str
    feature: FeatureId
    value: Magnitude


class Edit(BaseModel):
    """Set, scale or zero one neuron (`hook`, `index`) or SAE feature (`sae_id`, `feature`) at one
    token position (absolute, or negative from the prompt's end; omitted: every position)."""

    kind: Literal["edit"]
    hook: str | None = None
    position: Position | None = None
    index: Annotated[int, Field(ge=0, le=MAX_FEATURES - 1)] | None = None
    sae_id: str | None = None
    feature: FeatureId | None = None
    op: Literal["set", "scale", "zero"]
    value: Magnitude = 0.0


Intervention = Annotated[
    AblateDirection | AddDirection | Ace | SaeFeatureAdd | SaeFeatureClamp | Edit, Field(discriminator="kind")
]


MAX_PROMPT_CHARS = 20_000
MAX_MESSAGES = 64
MAX_INTERVENTIONS = 32


class Message(BaseModel):
    """One turn of a chat: after an optional first system message, user and assistant alternate."""

    role: Literal["system", "user", "assistant"]
    content: str = Field(..., max_length=MAX_PROMPT_CHARS)


class PromptOrMessages(BaseModel):
    """Exactly one of `prompt` (raw text, read as it is) and `messages` (a chat, rendered with the model's
    chat template, or the plain `User: ...\\nAssistant:` format for a model without one)."""

    prompt: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="Raw text; the demo chat format is `User: ...\\nAssistant:`. Exactly one of prompt and messages.",
    )
    messages: list[Message] | None = Field(
        None,
        min_length=1,
        max_length=MAX_MESSAGES,
        description="A chat instead of a prompt, rendered with the model's chat template (with the assistant's "
        "generation prompt; a last assistant message is continued); without a template, the plain format.",
    )

    @model_validator(mode="after")
    def _one_prompt(self) -> Self:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError('give exactly one of "prompt" (raw text) and "messages" (a chat), not both or neither')
        if self.messages is not None:
            total = sum(len(m.content) for m in self.messages)
            if total > MAX_PROMPT_CHARS:
                raise ValueError(f"the messages have {total:,} characters in all; the limit is {MAX_PROMPT_CHARS:,}")
        return self

    def chat(self) -> list[dict[str, str]] | None:
        return None if self.messages is None else [m.model_dump() for m in self.messages]


class GenerateRequest(PromptOrMessages):
    max_new_tokens: int = Field(
        48,
        ge=1,
        le=MAX_NEW_TOKENS,
        description="Tokens to generate; bounded by the server's limit (LOUPE_MAX_NEW_TOKENS) and the context.",
    )
    temperature: float = Field(
        0.0,
        ge=0.0,
        le=MAX_TEMPERATURE,
        allow_inf_nan=False,
        description="0 = greedy; > 0 = sampling with `seed`.",
    )
    seed: Seed | None = Field(None, description="Sampling seed; same seed, same completion.")
    model_id: str | None = Field(None, description="Default: the workspace's model.")
    interventions: list[Intervention] | None = Field(
        None,
        max_length=MAX_INTERVENTIONS,
        description="Hook plan for the steered completion, applied in order; none: `steered` is null.",
    )

    def plan(self) -> list[dict[str, Any]] | None:
        return [i.model_dump() for i in self.interventions] if self.interventions else None


class CompletionOut(BaseModel):
    completion: str
    tokens: list[str]


class GenerateResponse(BaseModel):
    default: CompletionOut
    steered: CompletionOut | None
    model_id: str
    prompt_tokens: int
    rendered_prompt: str = Field(..., description="The text the model read: the prompt, or the rendered messages.")
    prompt_token_ids: list[int] = Field(..., description="Its tokens, BOS first where the model has one.")
    prompt_token_strings: list[str] = Field(..., description="Each prompt token decoded on its own.")


@router.post("/generate", response_model=GenerateResponse)
async def generate(req: GenerateRequest, gen: GenerationDep) -> GenerateResponse:
    p, default, steered = await run_in_threadpool(
        gen.generate,
        req.prompt,
        req.max_new_tokens,
        req.temperature,
        req.seed,
        req.model_id,
        req.plan(),
        req.chat(),
    )
    return GenerateResponse(
        default=CompletionOut(completion=default.completion, tokens=default.tokens),
        steered=None if steered is None else CompletionOut(completion=steered.completion, tokens=steered.tokens),
        model_id=p.lm.id,
        **p.prompt_fields(),
    )


@router.post(
    "/generate/stream",
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "One JSON event per line."}},
)
async def generate_stream(req: GenerateRequest, gen: GenerationDep) -> StreamingResponse:
    """The same generation as POST /generate, as newline-delimited JSON events while tokens are made:
    `{"event": "start", "prompt_tokens", "rendered_prompt", "prompt_token_ids", "prompt_token_strings", ...}`,
    `{"event": "token", "stream": "default"|"steered", "index", "token"}`...,
    `{"event": "done", "default": {...}, "steered": {...}|null}`. Bad input is a 4xx before streaming; a failure
    after the stream started ends it with `{"event": "error", "status", "detail"}` instead of `done`."""
    prepared = await run_in_threadpool(
        gen.prepare, req.prompt, req.max_new_tokens, req.temperature, req.seed, req.model_id, req.plan(), req.chat()
    )

    def lines():
        try:
            for ev in gen.stream(prepared):
                yield json.dumps(ev) + "\n"
        except LoupeError as exc:
            yield json.dumps({"event": "error", "status": exc.status_code, "detail": exc.message}) + "\n"
        except Exception:  # the 200 is sent: the client learns of the failure from the stream itself
            log.exception("generate/stream failed after it started")
            detail = "the generation failed on the server (its log has the traceback)"
            yield json.dumps({"event": "error", "status": 500, "detail": detail}) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")
