from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from loupe.api.deps import GenerationDep

router = APIRouter(tags=["generate"])


class GenerateRequest(BaseModel):
    prompt: str = Field(..., min_length=1, max_length=20_000, description="Raw text; the demo chat format is `User: ...\\nAssistant:`.")
    max_new_tokens: int = Field(48, ge=1, description="Tokens to generate; bounded by the server's limit and the context.")
    temperature: float = Field(0.0, ge=0.0, allow_inf_nan=False, description="0 = greedy; > 0 = sampling with `seed`.")
    seed: int | None = Field(None, description="Sampling seed; same seed, same completion.")
    model_id: str | None = Field(None, description="Default: the workspace's model.")
    interventions: list[dict[str, Any]] | None = Field(None, description="Hook plan for the steered completion.")


class CompletionOut(BaseModel):
    completion: str
    tokens: list[str]


class GenerateResponse(BaseModel):
    default: CompletionOut
    steered: CompletionOut | None
    model_id: str
    prompt_tokens: int


@router.post("/generate", response_model=GenerateResponse)
async def generate(req: GenerateRequest, gen: GenerationDep) -> GenerateResponse:
    lm, n_prompt, default, steered = await run_in_threadpool(
        gen.generate, req.prompt, req.max_new_tokens, req.temperature, req.seed, req.model_id, req.interventions
    )
    return GenerateResponse(
        default=CompletionOut(completion=default.completion, tokens=default.tokens),
        steered=None if steered is None else CompletionOut(completion=steered.completion, tokens=steered.tokens),
        model_id=lm.id, prompt_tokens=n_prompt,
    )
