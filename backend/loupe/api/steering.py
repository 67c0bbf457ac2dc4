"""Vectors (steering directions: list, detail with the candidate table, compute, import, export)
and the steering evaluation sweep."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, Field

from loupe.api.bounds import MAX_PROMPTS, Id, Magnitude, PlainLine
from loupe.api.deps import LiveDep, SteeringDep, VectorsDep
from loupe.api.errors import errors
from loupe.api.generate import MAX_INTERVENTIONS, MAX_PROMPT_CHARS, Intervention, PromptOrMessages
from loupe.api.jobs import QUEUE_FULL
from loupe.errors import Unprocessable
from loupe.services.steering.evaluation import DEFAULT_ALPHAS
from loupe.services.steering.live import MAX_CONTINUE_TOKENS

router = APIRouter(tags=["steering"], responses=errors(404, 409))
MAX_IMPORT_BYTES = 64 * 1024 * 1024


class VectorOut(BaseModel):
    id: str
    name: str
    model_id: str
    hook: str
    layer: int
    position: int | None
    d_model: int
    source: str
    scores: dict[str, Any]
    passed: bool | None = Field(
        None,
        description="A computed direction: whether a candidate passed Arditi et al.'s filters (false: this one is "
        "kept for its interventions and is not a refusal direction, see `reason`); null for an imported vector.",
    )
    reason: str | None = Field(None, description="Why no candidate passed, when none did.")
    created_at: datetime


class CandidateRow(BaseModel):
    hook: str
    layer: float
    position: int
    norm: float
    bypass_score: float | None
    induce_score: float | None
    kl: float | None
    reasons: list[str]
    selected: bool
    kept: bool = False
    massive_share: float = 0.0


class CandidateTable(BaseModel):
    rows: list[CandidateRow] = []
    n_layers: int | None = None
    post_instruction_tokens: list[str] = []
    base_refusal_score: dict[str, float] = {}
    massive_dims: list[int] = []


class VectorDetail(VectorOut):
    candidates: CandidateTable


class VectorList(BaseModel):
    vectors: list[VectorOut]


class JobStarted(BaseModel):
    job_id: int
    status: str
    vector_id: str | None = None
    eval_id: int | None = None


Prompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]


class ComputeRequest(BaseModel):
    name: PlainLine = Field(..., min_length=1, max_length=60)
    harmful: list[Prompt] | None = Field(
        None,
        min_length=2,
        max_length=MAX_PROMPTS,
        description="Prompts (instructions) that elicit the behaviour (default: the dataset's).",
    )
    harmless: list[Prompt] | None = Field(
        None, min_length=2, max_length=MAX_PROMPTS, description="Prompts that do not (default: the dataset's)."
    )
    dataset_id: str | None = Field(
        None,
        description="When the prompt sets are left out: the train-split instructions of this dataset (records "
        'labelled "harmful": true or false; default: the world\'s dataset).',
    )
    model_id: str | None = None
    selection_rule: Literal["bypass_minus_induce", "bypass"] = Field(
        "bypass_minus_induce",
        description="Rank candidates passing Arditi et al.'s filters by bypass - induce "
        "score (default) or by bypass score alone (the paper's rule).",
    )
    keep_unpassed: bool = Field(
        False,
        description="When no candidate passes the filters, save the best one within the KL bound anyway, "
        "flagged `passed: false` (default: save nothing; the job's result says why none passed).",
    )


EvalMethod = Literal["none", "ablation", "addition", "ace", "prompt_refuse", "prompt_comply"]
# the default sweep: steering; the prompting baselines (a system message asking for refusal or
# compliance) are asked for by name
EVAL_METHODS: tuple[EvalMethod, ...] = ("none", "ablation", "addition", "ace")


class EvaluateRequest(BaseModel):
    vector_id: str
    methods: list[EvalMethod] = Field(default_factory=lambda: list(EVAL_METHODS), min_length=1)
    alphas: list[Magnitude] = Field(
        default_factory=lambda: list(DEFAULT_ALPHAS),
        min_length=1,
        max_length=21,
        description="Used by addition and ACE; ablation and none have one point.",
    )
    harmful: list[Prompt] | None = Field(
        None, max_length=MAX_PROMPTS, description="Default: the dataset's held-out harmful instructions."
    )
    harmless: list[Prompt] | None = Field(
        None, max_length=MAX_PROMPTS, description="Default: the dataset's held-out harmless instructions."
    )
    dataset_id: str | None = Field(
        None, description="Whose held-out instructions fill a prompt set left out (default: the world's dataset)."
    )
    limit: int = Field(64, ge=1, le=MAX_PROMPTS, description="At most this many prompts per set.")
    max_new_tokens: int = Field(12, ge=1, le=64)


class EvalRow(BaseModel):
    method: str
    alpha: float
    refusal_harmful: float
    refusal_harmless: float
    gap: float
    kl_harmless: float
    examples: dict[str, list[dict[str, str]]] = {}


class EvaluationOut(BaseModel):
    id: int
    created_at: datetime
    vector_id: str
    model_id: str
    hook: str
    rows: list[EvalRow]
    n_harmful: int
    n_harmless: int
    max_new_tokens: int
    seconds: float
    figure: dict[str, Any]
    targets: dict[str, Any] = {}


class EvaluationList(BaseModel):
    evaluations: list[EvaluationOut]


@router.get("/vectors", response_model=VectorList)
def list_vectors(vectors: VectorsDep, model_id: str | None = None) -> VectorList:
    return VectorList(vectors=[VectorOut(**v) for v in vectors.list(model_id)])


@router.get("/vectors/{vector_id}", response_model=VectorDetail)
def get_vector(vector_id: str, vectors: VectorsDep) -> VectorDetail:
    return VectorDetail(**vectors.get(vector_id))


@router.delete("/vectors/{vector_id}", status_code=204)
def delete_vector(vector_id: str, vectors: VectorsDep) -> Response:
    vectors.delete(vector_id)
    return Response(status_code=204)


@router.get(
    "/vectors/{vector_id}/export",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "safetensors: r, mu_minus, mu_plus"}},
)
def export_vector(vector_id: str, vectors: VectorsDep) -> Response:
    data = vectors.export(vector_id)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{vector_id}.safetensors"'},
    )


@router.post(
    "/vectors/import",
    response_model=VectorDetail,
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def import_vector(
    request: Request,
    vectors: VectorsDep,
    name: str = Query(..., min_length=1, max_length=60),
    model_id: str | None = None,
    hook: str | None = None,
    id: str | None = None,
) -> VectorDetail:
    """The body is a safetensors file with `r` [d_model] (and optionally `mu_minus`, `mu_plus`)."""
    data = await request.body()
    if len(data) > MAX_IMPORT_BYTES:
        raise Unprocessable(f"the file is {len(data):,} bytes; the limit is {MAX_IMPORT_BYTES:,}")
    rec = await run_in_threadpool(vectors.import_file, data, name, model_id, hook, id)
    return VectorDetail(**vectors.describe(rec, detail=True))


@router.post("/vectors/compute", response_model=JobStarted, status_code=202, responses=QUEUE_FULL)
def compute_vector(req: ComputeRequest, st: SteeringDep) -> JobStarted:
    """A difference-of-means direction from two prompt sets, selected as in Arditi et al. (a job). Its result
    (`GET /api/jobs/{job_id}`, `artifacts`) says whether a candidate passed (`passed`, `reason`, the `best`
    candidates' scores, the `refusal_tokens`, `massive_dims`) and `vector_id`, null when nothing was saved."""
    return JobStarted(
        **st.compute(
            req.name,
            req.harmful,
            req.harmless,
            req.model_id,
            rule=req.selection_rule,
            keep_unpassed=req.keep_unpassed,
            dataset_id=req.dataset_id,
        )
    )


@router.post("/steering/evaluate", response_model=JobStarted, status_code=202, responses=QUEUE_FULL)
def evaluate(req: EvaluateRequest, st: SteeringDep) -> JobStarted:
    """Refusal rates (harmful, harmless) and KL on harmless prompts for each method and alpha, as a
    job; the result is at GET /api/steering/evaluations/{eval_id} (the job's artifacts name it)."""
    return JobStarted(
        **st.evaluate(
            req.vector_id,
            list(req.methods),
            list(req.alphas),
            req.harmful,
            req.harmless,
            req.limit,
            req.max_new_tokens,
            dataset_id=req.dataset_id,
        )
    )


@router.get("/steering/evaluations", response_model=EvaluationList)
def evaluations(st: SteeringDep, vector_id: str | None = None, limit: int = Query(20, ge=1, le=200)) -> EvaluationList:
    return EvaluationList(evaluations=[EvaluationOut(**e) for e in st.evaluations(vector_id, limit)])


@router.get("/steering/evaluations/{eval_id}", response_model=EvaluationOut)
def evaluation(eval_id: Id, st: SteeringDep) -> EvaluationOut:
    return EvaluationOut(**st.evaluation(eval_id))


class NextTokenRequest(PromptOrMessages):
    interventions: list[Intervention] = Field(
        default_factory=list, max_length=MAX_INTERVENTIONS, description="As in POST /api/generate."
    )
    top_k: int = Field(10, ge=1, le=100)
    model_id: str | None = None
    continue_tokens: int = Field(
        0,
        ge=0,
        le=MAX_CONTINUE_TOKENS,
        description="When > 0, also the greedy continuations of this many tokens without and with "
        "the interventions (as POST /api/generate at temperature 0 gives them).",
    )


class TopToken(BaseModel):
    id: int
    token: str
    prob: float
    logit: float


class NextTokenResponse(BaseModel):
    model_id: str
    prompt_tokens: list[str]
    rendered_prompt: str = Field(..., description="The text the model read: the prompt, or the rendered messages.")
    prompt_token_ids: list[int]
    default: list[TopToken]
    steered: list[TopToken]
    kl: float
    default_continuation: str | None = Field(
        None, description="Greedy continuation without the interventions (only when continue_tokens > 0)."
    )
    steered_continuation: str | None = Field(
        None,
        description="Greedy continuation with the interventions on every forward pass (only when continue_tokens > 0).",
    )


@router.post("/steering/next-token", response_model=NextTokenResponse)
async def next_token(req: NextTokenRequest, live: LiveDep) -> NextTokenResponse:
    """Live editing: the next-token distribution (top tokens) without and with the interventions."""
    out = await run_in_threadpool(
        live.next_token,
        req.prompt,
        [i.model_dump() for i in req.interventions],
        req.top_k,
        req.model_id,
        continue_tokens=req.continue_tokens,
        messages=req.chat(),
    )
    return NextTokenResponse(**out)
