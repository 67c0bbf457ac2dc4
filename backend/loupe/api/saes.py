"""SAEs: the registry with quality metrics, feature lists, dashboards, labels, activations on text."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from loupe.api.bounds import MAX_FEATURES, FeatureIndex, PlainLine
from loupe.api.deps import FeaturesDep, SAEJobsDep, SAEsDep
from loupe.api.errors import errors
from loupe.api.jobs import QUEUE_FULL, JobOut, job_out

router = APIRouter(tags=["saes"], responses=errors(404, 409))


class DashboardStatus(BaseModel):
    state: Literal["ready", "pending", "building", "failed"]
    job_id: int | None = Field(None, description="the job running, next in line, or that failed")
    job_name: str | None = None
    progress: float | None = None
    message: str | None = None


class SAEOut(BaseModel):
    id: str
    model_id: str
    hook_name: str
    architecture: str
    d_in: int
    d_sae: int
    source: str = Field(description="demo (the world's build), trained (from the app), disk or pretrained")
    dataset_id: str | None = Field(
        None, description="what it was trained or its dashboards built on; null: the world's"
    )
    version: int = Field(
        1, description="1, 2, ...: one more each time its weights change (a retrain under the same id)"
    )
    path: str
    metrics: dict[str, Any] = Field(
        description="held-out quality: fvu, l0, dead_fraction, dense_fraction, "
        "ce_loss_recovered, per-domain best-feature AUROC, targets"
    )
    dashboards: DashboardStatus


class SAEList(BaseModel):
    saes: list[SAEOut]


class StaleLabel(BaseModel):
    """A person's label written for an earlier version of the SAE: its weights changed since, so the
    index may name another feature now; shown as such, never as the feature's label."""

    label: str
    version: int = Field(description="the SAE version it was written for")
    stale: Literal[True] = True


class FeatureRow(BaseModel):
    index: int
    density: float
    max_activation: float
    mean_activation: float
    capacity: float
    auto_label: str
    label: str | None = Field(description="a person's label, written for the SAE's current version")
    stale_label: StaleLabel | None = Field(
        None, description="a person's label written for an earlier version of the SAE (then `label` is null)"
    )
    top_domain: str | None
    top_domain_share: float | None


class FeaturePage(BaseModel):
    sae_id: str
    total: int
    offset: int
    features: list[FeatureRow]


class ExampleToken(BaseModel):
    token: str
    id: int
    activation: float


class Example(BaseModel):
    seq: int = Field(description="row of the training token file")
    pos: int
    activation: float
    center: int = Field(description="index in `tokens` of the example's token")
    tokens: list[ExampleToken]


class Interval(BaseModel):
    bin: int
    low: float
    high: float
    share: float = Field(description="share of the feature's nonzero activations that fall in this bin")
    examples: list[Example]


class Histogram(BaseModel):
    counts: list[int]
    max: float
    figure: dict[str, Any] = Field(description="plotly figure JSON")


class Dashboard(FeatureRow):
    sae_id: str
    hook_name: str
    d_sae: int
    summary: dict[str, Any] = Field(
        description="tokens and domains the feature is enriched in, logit effects, "
        "nearest features by decoder cosine, neurons it reads from / writes to"
    )
    top_examples: list[Example]
    intervals: list[Interval]
    histogram: Histogram
    neighbour_labels: dict[str, str] = Field(
        default_factory=dict, description="label (a person's, else the automatic one) of each nearest feature"
    )


class LabelIn(BaseModel):
    label: PlainLine = Field(max_length=200, description="empty to remove the label; one line, no control characters")


class LabelOut(BaseModel):
    sae_id: str
    index: int
    label: str | None
    version: int = Field(description="the SAE version the label is written for (its current one)")


class ActivationsIn(BaseModel):
    text: str = Field(min_length=1, max_length=20_000)
    top_k: int = Field(5, ge=1, le=64)
    features: list[Annotated[int, Field(ge=0, le=MAX_FEATURES - 1)]] = Field(
        default_factory=list,
        max_length=16,
        description="features whose activation on every token to return in feature_activations",
    )


class TokenFeature(BaseModel):
    index: int
    activation: float


class TokenActivations(BaseModel):
    token: str
    id: int
    position: int
    features: list[TokenFeature]


class ActivationsOut(BaseModel):
    sae_id: str
    hook_name: str
    tokens: list[TokenActivations]
    max_activation: float
    labels: dict[str, str] = Field(description="label (a person's, else the automatic one) of every feature listed")
    feature_activations: dict[str, list[float]] = Field(
        default_factory=dict, description="for each requested feature, its activation on every token"
    )


class NeuronsOut(BaseModel):
    sae_id: str
    units: str | None
    polysemanticity: list[float] = Field(
        description="per neuron: participation ratio of live features' unit "
        "decoder loads, the effective number of features on it"
    )
    most_polysemantic: list[list[float]]
    mean: float


@router.get("/saes", response_model=SAEList)
def list_saes(saes: SAEsDep, model_id: str | None = None) -> SAEList:
    return SAEList(saes=saes.list(model_id))


class RegisterIn(BaseModel):
    id: str = Field(description="the id to register it under (letters, digits, _ . -)")
    model_id: str | None = Field(None, description="the model whose hook it reads; default: the default model")
    path: str | None = Field(
        None,
        description="a sae-lens SAE directory (cfg.json + sae_weights.safetensors) inside one of the server's SAE "
        "import folders (LOUPE_SAE_ROOTS, default: imports/ in the workspace); a relative path is taken inside the "
        "first; no symbolic links",
    )
    release: str | None = Field(None, description="sae-lens pretrained release (needs the Hugging Face hub)")
    hub_sae_id: str | None = Field(None, description="the SAE's id inside `release`")
    dataset_id: str | None = Field(None, description="the dataset its dashboards are built on; default: the world's")


@router.post("/saes", response_model=SAEOut, status_code=202, responses=QUEUE_FULL)
def register_sae(body: RegisterIn, sae_jobs: SAEJobsDep, saes: SAEsDep) -> Any:
    """Register an SAE; its dashboards build as background jobs (see `dashboards` and /api/jobs)."""
    rec, _ = sae_jobs.register(body.id, body.model_id, body.path, body.release, body.hub_sae_id, body.dataset_id)
    return saes.describe(rec)


class TrainIn(BaseModel):
    model_id: str
    hook_name: str = Field(description="a hook of the model with one vector per token, e.g. blocks.6.hook_resid_post")
    dataset_id: str
    architecture: Literal["topk", "standard", "matryoshka", "jumprelu"] = "topk"
    expansion: int | None = Field(None, ge=1, le=64, description="d_sae = expansion x the hook's width (default 8)")
    d_sae: int | None = Field(
        None, ge=1, le=MAX_FEATURES, description="instead of expansion: a multiple of the hook's width"
    )
    k: int = Field(
        32, ge=1, le=MAX_FEATURES, description="topk, matryoshka: active features per token; jumprelu: the target L0"
    )
    train_tokens: int = Field(400_000, ge=1_000, le=200_000_000, description="tokens seen in training")
    name: str | None = Field(None, description="the new SAE's id; default: <model>-<hook>-<architecture>-<d_sae>")
    first_position: bool = Field(
        False,
        description="also train and measure on each sequence's first position (an attention sink with massive "
        "activations in many real models; Gemma Scope leaves it out, and so does Loupe by default)",
    )


class TrainOut(BaseModel):
    sae: SAEOut
    jobs: list[JobOut] = Field(description="tokens (if missing), cache, train, eval, dashboards: one after another")


@router.post("/saes/train", response_model=TrainOut, status_code=202, responses=QUEUE_FULL)
def train_sae(body: TrainIn, sae_jobs: SAEJobsDep, saes: SAEsDep) -> Any:
    """Train an SAE on any model's hook over a dataset, as a chain of jobs (cancel any with DELETE
    /api/jobs/{id}); it is then measured on the dataset's held-out tokens and gets dashboards."""
    rec, jobs = sae_jobs.train(
        body.model_id,
        body.hook_name,
        body.dataset_id,
        body.architecture,
        body.expansion,
        body.d_sae,
        body.k,
        body.train_tokens,
        body.name,
        body.first_position,
    )
    return {"sae": saes.describe(rec), "jobs": [job_out(j) for j in jobs]}


@router.post("/saes/{sae_id}/dashboards", response_model=TrainOut, status_code=202, responses=QUEUE_FULL)
def retry_dashboards(sae_id: str, sae_jobs: SAEJobsDep, saes: SAEsDep) -> Any:
    """Queue an SAE's dashboard steps again (after they failed, or when they are missing)."""
    rec, jobs = sae_jobs.retry_dashboards(sae_id)
    return {"sae": saes.describe(rec), "jobs": [job_out(j) for j in jobs]}


@router.delete("/saes/{sae_id}", status_code=204)
def delete_sae(sae_id: str, saes: SAEsDep) -> Response:
    """Delete an SAE: its row, files, dashboards and labels (409 while a job builds it)."""
    saes.delete(sae_id)
    return Response(status_code=204)


@router.get("/saes/{sae_id}", response_model=SAEOut)
def get_sae(sae_id: str, saes: SAEsDep) -> Any:
    return saes.describe(saes.record(sae_id))


@router.get("/saes/{sae_id}/features", response_model=FeaturePage)
def list_features(
    sae_id: str,
    features: FeaturesDep,
    sort: str = Query("index", description="index | density | max_activation | capacity | top_domain_share"),
    order: str = Query("asc", description="asc | desc"),
    offset: int = Query(0, ge=0, le=MAX_FEATURES),
    limit: int = Query(50, ge=1, le=500),
    q: str | None = Query(None, max_length=200, description="search automatic and people's labels"),
    domain: str | None = None,
    min_density: float | None = Query(None, ge=0, le=1),
    max_density: float | None = Query(None, ge=0, le=1),
) -> Any:
    return features.features(sae_id, sort, order, offset, limit, q, domain, min_density, max_density)


@router.get("/saes/{sae_id}/features/{index}", response_model=Dashboard)
async def feature_dashboard(sae_id: str, index: FeatureIndex, features: FeaturesDep) -> Any:
    # Run on the event loop, not the thread pool: the work is about a millisecond of CPU (two indexed
    # queries, one slice of the pages the build rendered), and 16 threads fighting over the interpreter
    # lock tripled its latency under concurrent clients (bench/saes.py). The body is returned as bytes:
    # re-validating ~1,000 example tokens against the response model cost twice the service's own
    # time; the schema above documents it and the API tests check it.
    return Response(features.dashboard_json(sae_id, index), media_type="application/json")


@router.put("/saes/{sae_id}/features/{index}/label", response_model=LabelOut)
def set_label(sae_id: str, index: FeatureIndex, body: LabelIn, features: FeaturesDep) -> Any:
    return features.set_label(sae_id, index, body.label)


@router.get("/saes/{sae_id}/neurons", response_model=NeuronsOut)
def neurons(sae_id: str, features: FeaturesDep) -> Any:
    return features.neurons(sae_id)


@router.post("/saes/{sae_id}/activations", response_model=ActivationsOut)
def activations(sae_id: str, body: ActivationsIn, features: FeaturesDep) -> Any:
    return features.activations(sae_id, body.text, body.top_k, body.features)
