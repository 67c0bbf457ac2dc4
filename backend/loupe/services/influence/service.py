"""Influence queries: which training sequences made a completion likely, or built an SAE feature.

One gradient of the measurement, rotated, whitened and rounded, against every packed row of the
cache; TF-IDF candidate filtering (optional); in fast mode the cache's top `rescore_candidates`
re-scored with exact EK-FAC (per-token terms); in precise mode the candidates re-scored with
kronfluence's exact pairwise scores (per token)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from loupe.core import influence as I
from loupe.core import packed as P
from loupe.core.chat import validate_messages
from loupe.core.finetune import IGNORE_INDEX
from loupe.errors import Conflict, NotFound, Unprocessable
from loupe.jobs.pipeline import Pipeline
from loupe.jobs.runner import INTERACTIVE, JobRunner
from loupe.services.datasets import DatasetService, Subject
from loupe.services.finetune import conversation_spans, encode_text
from loupe.services.influence.build import InfluencePipeline
from loupe.services.influence.config import CACHE_FORMAT, TARGETS, InfluenceConfig, index_config
from loupe.services.influence.hooks import HookCapture, sae_feature_value
from loupe.services.influence.index import InfluenceIndex, load_factors
from loupe.services.influence.precise import FeatureMeasure, precise_scores
from loupe.services.influence.training import (
    EXAMPLE_DOMAINS,
    IndexRef,
    TrainingSet,
    check_target,
    example_max_length,
    examples_step,
    tracked_lora,
    tracked_mlp,
)
from loupe.services.models import ModelService
from loupe.services.models.loading import load_tokenizer
from loupe.services.models.registry import chat_format_of, render_chat
from loupe.services.saes.registry import SAERegistry
from loupe.services.workspace import Workspace
from loupe.storage.artifacts import atomic_dir, fingerprint, load_tensors, read_manifest, write_manifest
from loupe.storage.models import Job

# Sequences per backward pass when fast mode re-scores: small batches keep the [b, 128, 4,096] logits in
# cache. 80 candidates on 2 idle cores, per query: batches of 8 / 16 / 32 / 80 -> 0.79 / 0.82 / 0.93 / 1.13 s.
RESCORE_BATCH = 16


SIGN = "positive: adding the training sequence makes the measurement larger (the completion more likely)"


NORMALISATION = (
    "score = grad f . (G + lambda I)^-1 grad log p(z) / N with N the number of training sequences: "
    "the first-order predicted change of f (nats, for log p) from adding the sequence once more"
)


@dataclass(frozen=True)
class Measurement:
    """A query's measurement f: its gradient per layer, the tokens it is measured on, what precise mode
    hands kronfluence, and what the response reports about it."""

    grads: dict[str, Tensor]
    ids: Tensor
    mask: Tensor | None  # the completion's tokens (None for a feature)
    kf_measure: FeatureMeasure | None  # None: kronfluence's default, log p of the masked tokens
    info: dict[str, Any]


def _model_type(model_dir: Path) -> str:
    """config.json's model_type of a Hugging Face directory ("" where it has none)."""
    try:
        return str(json.loads((model_dir / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError):
        return ""


def _job_info(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "done": job.progress_done,
        "total": job.progress_total,
        "message": job.message,
        "error": (job.error or "").splitlines()[0] if job.error else None,
    }


def _token_position(token: Any, n_tok: int) -> int:
    """The measured token: the last by default, negative indices from the end."""
    pos = n_tok - 1 if token is None else int(token)
    if pos < 0:
        pos += n_tok
    if not 0 <= pos < n_tok:
        raise Unprocessable(f"token {token} is outside the prompt's {n_tok} tokens")
    return pos


MAX_LOADED = 2  # indexes kept in memory at once (each holds a copy of its model)


def _with_bos(tok: Any, text: str) -> list[int]:
    """A rendered prompt's tokens as generate encodes them (`LoadedModel.encode_prompt`): special tokens
    the template writes become their ids, BOS first where the tokenizer has one, never twice."""
    ids = list(tok(text, add_special_tokens=False, split_special_tokens=False)["input_ids"])
    bos = tok.bos_token_id
    return ids if bos is None or (ids and ids[0] == bos) else [bos, *ids]


class InfluenceService:
    """Influence indexes, one per (model, dataset, target): the world's own (its model and the tokens it
    was trained on; built with the world) and any other built from the API (`build`), and queries over
    them."""

    def __init__(
        self,
        ws: Workspace,
        saes: SAERegistry,
        subject: Subject | None,
        cfg: InfluenceConfig | None,
        models: ModelService | None = None,
        datasets: DatasetService | None = None,
        jobs: JobRunner | None = None,
    ):
        self.ws = ws
        self.saes = saes
        self.subject = subject
        self.models = models
        self.datasets = datasets
        self.jobs = jobs
        self.preset = cfg  # the world's settings; their query-time fields apply to any built index
        self.cfg: InfluenceConfig = cfg or InfluenceConfig("default")  # query-time settings
        self._indexes: dict[IndexRef, InfluenceIndex] = {}
        self._lock = threading.Lock()
        self._adopt_legacy()

    # -- which indexes there are --------------------------------------------------------------------
    def world_ref(self) -> IndexRef | None:
        """The world's own index (its model and training set), where the world builds one."""
        if self.subject is None or self.preset is None:
            return None
        return IndexRef(self.subject.model_id, self.subject.dataset.id, "mlp")

    def root(self, ref: IndexRef) -> Path:
        return self.ws.artifact("influence", ref.model_id, ref.dataset_id, ref.target)

    @property
    def factors_dir(self) -> Path:
        """The world's index's factors."""
        ref = self.world_ref()
        assert ref is not None, "the world builds no influence index"
        return self.root(ref) / "factors"

    def _adopt_legacy(self) -> None:
        """A workspace built before indexes were per (model, dataset) kept the world's under
        artifacts/influence/{factors,gradients}: moved (renamed) to the world's index directory."""
        ref, legacy = self.world_ref(), self.ws.artifact("influence")
        if ref is None or not (legacy / "factors" / "manifest.json").is_file() or self.root(ref).exists():
            return
        self.root(ref).mkdir(parents=True)
        for name in ("factors", "gradients"):
            if (legacy / name).is_dir():
                os.replace(legacy / name, self.root(ref) / name)

    def training_set(self, ref: IndexRef) -> TrainingSet:
        """What index `ref` is of; NotFound for an unknown model or dataset, Unprocessable where EK-FAC
        cannot track the model as asked."""
        check_target(ref.target)
        root = self.root(ref)
        subject = self.subject
        if ref == self.world_ref():
            assert subject is not None and self.preset is not None
            model_dir = subject.model_dir
            return TrainingSet(
                ref=ref,
                root=root,
                model_key=subject.model_key,
                tokens_path=subject.tokens("train"),
                domains=tuple(subject.dataset.domains),
                load_model=lambda: tracked_mlp(model_dir),
                cfg=self.preset,
                step_prefix="influence",
                model_dir=model_dir,
            )
        if self.models is None or self.datasets is None:
            raise Conflict("this server builds no influence index but the world's")
        rec = self.models.record(ref.model_id)
        if rec is None:
            raise NotFound(f"unknown model {ref.model_id!r}")
        dataset = self.datasets.get(ref.dataset_id)
        model_dir = Path(self.models.path(rec))
        lineage = rec.config.get("lineage") or None
        family = _model_type(model_dir)
        if ref.target == "mlp":
            if family not in I.MLP_LINEARS:
                raise Unprocessable(
                    f"Loupe does not know the MLP layers of model {ref.model_id!r} (model type {family!r}; it knows "
                    f"{', '.join(sorted(I.MLP_LINEARS))}); for a LoRA fine-tune use target 'lora'"
                )

            def load_model() -> tuple[Any, list[str]]:
                return tracked_mlp(model_dir)

        else:
            adapter = model_dir / "adapter"
            parent = self.models.record(str((lineage or {}).get("parent")))
            if (lineage or {}).get("method") != "lora" or not adapter.is_dir() or parent is None:
                raise Unprocessable(
                    f"model {ref.model_id!r} is not a LoRA fine-tune made by Loupe (target 'lora' needs its adapter "
                    "and its parent); use target 'mlp'"
                )
            parent_dir = Path(self.models.path(parent))

            def load_model() -> tuple[Any, list[str]]:
                return tracked_lora(parent_dir, adapter)

        model_key = fingerprint("model", (read_manifest(model_dir) or {}).get("key"), rec.path, rec.config)
        n_ctx = int(rec.config.get("n_ctx", 2048))
        max_length = example_max_length(lineage, ref.dataset_id, n_ctx)
        pair = root.parent
        prefix = f"influence.{ref.model_id}.{ref.dataset_id}"
        chat = self.models.chat_format(ref.model_id)
        examples = examples_step(
            f"{prefix}.examples", pair / "examples", model_key, model_dir, chat, dataset, max_length
        )
        return TrainingSet(
            ref=ref,
            root=root,
            model_key=model_key,
            tokens_path=pair / "examples" / "train.safetensors",
            domains=EXAMPLE_DOMAINS,
            load_model=load_model,
            cfg=index_config(f"{ref.model_id}/{ref.dataset_id}/{ref.target}", self.preset),
            step_prefix=f"{prefix}.{ref.target}",
            examples=examples,
            model_dir=model_dir,
        )

    def pipeline(self, ref: IndexRef) -> InfluencePipeline:
        return InfluencePipeline(self.training_set(ref))

    def refs(self) -> list[IndexRef]:
        """Every index the workspace has or has been asked to build: the world's, those on disk, those of
        build jobs."""
        found: list[IndexRef] = []
        world = self.world_ref()
        if world is not None:
            found.append(world)
        top = self.ws.artifact("influence")
        if top.is_dir():
            for m in sorted(p for p in top.iterdir() if p.is_dir() and not p.name.startswith(".")):
                for d in sorted(p for p in m.iterdir() if p.is_dir() and not p.name.startswith(".")):
                    found += [IndexRef(m.name, d.name, t) for t in TARGETS if (d / t).is_dir()]
        for job in self.ws.jobs.list(limit=500, kind="build"):
            p = job.params or {}
            if job.name.startswith("influence.") and p.get("target") in TARGETS and "model_id" in p:
                found.append(IndexRef(str(p["model_id"]), str(p["dataset_id"]), str(p["target"])))
        return list(dict.fromkeys(found))

    def _step_names(self, ref: IndexRef) -> list[str]:
        if ref == self.world_ref():
            return ["influence.factors", "influence.gradients"]
        prefix = f"influence.{ref.model_id}.{ref.dataset_id}"
        return [f"{prefix}.examples", f"{prefix}.{ref.target}.factors", f"{prefix}.{ref.target}.gradients"]

    def describe(self, ref: IndexRef) -> dict[str, Any]:
        """An index's status (ready | building | failed | not built), its latest jobs and its sizes."""
        ready = self.ready(ref)
        jobs = [j for j in (self.ws.jobs.latest(n) for n in self._step_names(ref)) if j is not None]
        active = [j for j in jobs if j.status in ("queued", "running")]
        failed = [j for j in jobs if j.status == "failed"]
        status = "ready" if ready else "building" if active else "failed" if failed else "not built"
        fm = read_manifest(self.root(ref) / "factors") or {}
        gm = read_manifest(self.root(ref) / "gradients") or {}
        job = active[0] if active else failed[0] if failed else None
        return {
            **ref.to_dict(),
            "status": status,
            "ready": ready,
            "world": ref == self.world_ref(),
            "n_train": gm.get("n_train") if ready else None,
            "modules": len(fm.get("modules", [])) if ready else None,
            "dim": gm.get("dim") if ready else None,
            "bytes_per_sequence": gm.get("bytes_per_sequence") if ready else None,
            "job": None if job is None else _job_info(job),
        }

    def list_indexes(self) -> list[dict[str, Any]]:
        return [self.describe(r) for r in self.refs()]

    def build(self, model_id: str, dataset_id: str, target: str = "mlp") -> tuple[dict[str, Any], list[Job]]:
        """Queue the build of index (model_id, dataset_id, target) as a chain of jobs (examples, factors,
        gradients); the same request while it runs joins it; nothing is queued for a built index."""
        if self.jobs is None:
            raise Conflict("this server has no job runner for influence builds")
        ref = IndexRef(model_id, dataset_id, target)
        steps = self.pipeline(ref).steps()
        dedupe = f"influence-index:{model_id}:{dataset_id}:{target}"
        jobs = Pipeline(self.jobs, steps).submit_chain(steps, INTERACTIVE, ref.to_dict(), dedupe)
        return self.describe(ref), jobs

    def resolve(self, model_id: str | None, dataset_id: str | None = None, target: str | None = None) -> IndexRef:
        """The index a query of `model_id` uses (None: the world's model): the one named by dataset and
        target, else a built one (the world's first, then the model's fine-tuning dataset, MLP before
        LoRA). Conflict (409) naming how to build one where the model has none."""
        if target is not None:
            check_target(target)
        world = self.world_ref()
        if model_id is None:
            model_id = world.model_id if world is not None else (self.models.default_id() if self.models else None)
        refs = [
            r
            for r in self.refs()
            if r.model_id == model_id
            and (dataset_id is None or r.dataset_id == dataset_id)
            and (target is None or r.target == target)
        ]
        if not refs:
            raise self.not_built(model_id, dataset_id, target)
        lineage_ds = self._lineage_dataset(model_id)

        def rank(r: IndexRef) -> tuple[bool, bool, bool, bool]:
            return (not self.ready(r), r != world, r.dataset_id != lineage_ds, r.target != "mlp")

        return min(refs, key=rank)

    def _lineage_dataset(self, model_id: str | None) -> str | None:
        rec = self.models.record(model_id) if self.models is not None and model_id else None
        return ((rec.config.get("lineage") or {}).get("dataset_id") if rec is not None else None) or None

    def not_built(self, model_id: str | None, dataset_id: str | None = None, target: str | None = None) -> Conflict:
        dataset = dataset_id or self._lineage_dataset(model_id) or "DATASET"
        have = [f"model {r.model_id!r} on {r.dataset_id!r} ({r.target})" for r in self.refs() if self.ready(r)]
        built = f"this workspace's indexes: {'; '.join(have)}" if have else "this workspace has no built index"
        body = json.dumps({"model_id": model_id, "dataset_id": dataset, "target": target or "mlp"})
        what = f" on dataset {dataset_id!r}" if dataset_id else ""
        return Conflict(
            f"influence is not built for model {model_id!r}{what} ({built}). Influence needs the data the model "
            f"was trained on: build an index with POST /api/influence/indexes {body} (the Influence page's "
            "build button), then ask again"
        )

    def ready(self, ref: IndexRef | None = None) -> bool:
        """Factors and a gradient cache built from them (a cache of an older format or of other factors
        is stale: the build's gradients step replaces it). Default: the world's index."""
        ref = ref or self.world_ref()
        if ref is None:
            return False
        f, g = self.root(ref) / "factors", self.root(ref) / "gradients"
        fm, gm = read_manifest(f), read_manifest(g)
        return (
            fm is not None
            and gm is not None
            and gm.get("factors_key") == fm.get("key")
            and gm.get("format") == CACHE_FORMAT
            and all((g / s["file"]).is_file() for s in gm.get("shards", []))
        )

    def not_ready(self, ref: IndexRef | None = None) -> Conflict:
        ref = ref or self.world_ref()
        if ref is None:
            world = self.ws.settings.world
            return Conflict(
                f"influence is not part of this world's build (LOUPE_WORLD={world}): build an index of a model on "
                "the data it was trained on with POST /api/influence/indexes (the Influence page's build button)"
            )
        parts = []
        for name in self._step_names(ref):
            job = self.ws.jobs.latest(name)
            if job is None:
                parts.append(f"{name}: not started")
            else:
                total = f"/{job.progress_total:,.0f}" if job.progress_total else ""
                parts.append(f"{name}: {job.status} {job.progress_done:,.0f}{total} {job.message}".strip())
        how = (
            ""
            if ref == self.world_ref()
            else f"; build it with POST /api/influence/indexes {json.dumps(ref.to_dict())}"
        )
        return Conflict("influence factors are not built yet (" + "; ".join(parts) + f"); see /api/jobs{how}")

    def store_evaluation(self, results: dict[str, Any]) -> int:
        """`loupe eval influence`'s results as an eval row and evals/influence/results.json; the row's id."""
        row = self.ws.evals.add("influence", self.subject.model_id if self.subject else "", results)
        with atomic_dir(self.ws.artifact("evals", "influence")) as tmp:
            (tmp / "results.json").write_text(json.dumps(results, indent=1))
            write_manifest(tmp, {"eval_id": row.id})
        return row.id

    def index(self, ref: IndexRef | None = None) -> InfluenceIndex:
        """The loaded index `ref` (default: the world's); 409 while it is not built."""
        ref = ref or self.world_ref()
        if ref is None or not self.ready(ref):
            raise self.not_ready(ref)
        with self._lock:
            if ref not in self._indexes:
                while len(self._indexes) >= MAX_LOADED:
                    self._indexes.pop(next(iter(self._indexes)))
                self._indexes[ref] = self._load(self.training_set(ref))
            return self._indexes[ref]

    def _load(self, ts: TrainingSet) -> InfluenceIndex:
        gm = read_manifest(ts.gradients_dir) or {}
        factors = load_factors(ts.factors_dir)
        projs = I.make_projection(factors, int(gm["dim"]))
        packed = P.concat(
            [P.from_tensors(load_tensors(ts.gradients_dir / s["file"]), int(gm["dim"])) for s in gm["shards"]]
        )
        tokens = load_tensors(ts.tokens_path)
        model, _ = ts.load_model()
        tok = load_tokenizer(str(ts.model_dir))
        try:
            chat = self.models.chat_format(ts.ref.model_id) if self.models is not None else chat_format_of(tok)[0]
        except NotFound:
            chat = chat_format_of(tok)[0]
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        doc_ids = (read_manifest(ts.tokens_path.parent) or {}).get("doc_ids") if ts.examples is not None else None
        return InfluenceIndex(
            ts=ts,
            model=model,
            tokenizer=tok,
            chat=chat,
            names=list(factors),
            factors=factors,
            projs=projs,
            packed=packed,
            tokens=tokens,
            n_ctx=int(base.config.max_position_embeddings),
            lock=threading.Lock(),
            doc_ids=doc_ids,
        )

    # measurement gradients
    def _encode(self, ix: InfluenceIndex, prompt: str, completion: str) -> tuple[Tensor, Tensor]:
        tok = ix.tokenizer
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        p = [bos] + tok(prompt, add_special_tokens=False)["input_ids"]
        c = tok(completion, add_special_tokens=False)["input_ids"] if completion else []
        if completion and not c:
            raise Unprocessable("the completion has no tokens")
        if len(p) + len(c) > ix.n_ctx:
            raise Unprocessable(f"prompt + completion are {len(p) + len(c)} tokens; the model's context is {ix.n_ctx}")
        ids = torch.tensor([p + c])
        mask = torch.zeros_like(ids, dtype=torch.bool)
        mask[0, len(p) :] = True
        return ids, mask

    def _completion_grads(self, ix: InfluenceIndex, ids: Tensor, mask: Tensor) -> dict[str, Tensor]:
        g = I.logprob_layer_grads(ix.model, ix.names, ids, mask)
        return {n: v[0] for n, v in I.sequence_gradients(g).items()}

    def _feature(self, feature: dict[str, Any]) -> tuple[Any, str, int]:
        sae, rec = self.saes.load(str(feature.get("sae_id")))
        idx = int(feature.get("index", -1))
        if not 0 <= idx < int(rec.d_sae):
            raise NotFound(f"SAE {rec.id!r} has features 0..{int(rec.d_sae) - 1}; there is no feature {idx}")
        return sae, rec.hook_name, idx

    def _feature_grads(
        self, ix: InfluenceIndex, ids: Tensor, sae: Any, hook: str, feat: int, pos: int
    ) -> tuple[dict[str, Tensor], float]:
        box: dict[str, float] = {}
        with HookCapture(ix.model, hook) as cap:

            def objective(logits: Tensor) -> Tensor:
                v = sae_feature_value(sae, cap.captured, feat)[:, pos]
                box["value"] = float(v.detach()[0])
                return v

            g = I.per_token_layer_grads(ix.model, ix.names, ids, objective)
        return {n: v[0] for n, v in I.sequence_gradients(g).items()}, box["value"]

    def _encode_chat(
        self, ix: InfluenceIndex, messages: Sequence[Mapping[str, str]], completion: str | None
    ) -> tuple[Tensor, Tensor]:
        """Tokens of a conversation and the measured ones: with a `completion`, the messages rendered as
        generate renders them (the model's chat template with the assistant's generation prompt) and the
        completion's tokens after them; without one, the last message is the assistant's turn, encoded as
        the fine-tune encodes it (`services.finetune`), its labelled tokens (end of turn included) measured."""
        problem = validate_messages(messages)
        if problem is not None:
            raise Unprocessable(problem)
        tok = ix.tokenizer
        if completion:
            p = _with_bos(tok, render_chat(tok, ix.chat, messages, ix.ts.ref.model_id))
            c = tok(completion, add_special_tokens=False)["input_ids"]
            if not c:
                raise Unprocessable("the completion has no tokens")
            ids, mask = p + c, [False] * len(p) + [True] * len(c)
        else:
            if messages[-1]["role"] != "assistant":
                raise Unprocessable("give a completion, or end the messages with the assistant's turn to measure")
            try:
                text, spans = conversation_spans(tok, ix.chat, messages)
            except ValueError as exc:
                raise Unprocessable(str(exc)) from exc
            ex = encode_text(tok, text, spans[-1:], ix.n_ctx + 1)
            ids, mask = ex["input_ids"], [t != IGNORE_INDEX for t in ex["labels"]]
            if not any(mask[1:]):
                raise Unprocessable("the assistant's turn has no tokens")
        if len(ids) > ix.n_ctx:
            raise Unprocessable(f"the conversation is {len(ids)} tokens; the model's context is {ix.n_ctx}")
        return torch.tensor([ids]), torch.tensor([mask])

    def _prompt_only(
        self, ix: InfluenceIndex, prompt: str | None, messages: Sequence[Mapping[str, str]] | None
    ) -> Tensor:
        """The tokens of a prompt (raw, or messages rendered with the generation prompt) for a feature."""
        if messages is not None:
            problem = validate_messages(messages)
            if problem is not None:
                raise Unprocessable(problem)
            ids = _with_bos(ix.tokenizer, render_chat(ix.tokenizer, ix.chat, messages, ix.ts.ref.model_id))
            if len(ids) > ix.n_ctx:
                raise Unprocessable(f"the prompt is {len(ids)} tokens; the model's context is {ix.n_ctx}")
            return torch.tensor([ids])
        return self._encode(ix, prompt or "", "")[0]

    def _measure(
        self,
        ix: InfluenceIndex,
        prompt: str | None,
        completion: str | None,
        feature: dict[str, Any] | None,
        messages: Sequence[Mapping[str, str]] | None = None,
    ) -> Measurement:
        if feature is not None:
            return self._measure_feature(ix, self._prompt_only(ix, prompt, messages), feature)
        if messages is not None:
            ids, mask = self._encode_chat(ix, messages, completion)
        else:
            ids, mask = self._encode(ix, prompt or "", completion or "")
        return self._measure_completion(ix, ids, mask)

    def _measure_feature(self, ix: InfluenceIndex, ids: Tensor, feature: dict[str, Any]) -> Measurement:
        """f = the SAE feature's pre-activation at one token of the prompt (default: the last)."""
        sae, hook, feat = self._feature(feature)
        pos = _token_position(feature.get("token"), ids.shape[1])
        grads, value = self._feature_grads(ix, ids, sae, hook, feat, pos)
        info = {
            "kind": "feature",
            "sae_id": feature["sae_id"],
            "feature": feat,
            "hook": hook,
            "token": pos,
            "token_text": ix.tokenizer.decode([int(ids[0, pos])]),
            "value": value,
            "f": "SAE feature pre-activation at the token",
        }
        return Measurement(grads, ids, None, ("feature", sae, hook, feat, pos), info)

    def _measure_completion(self, ix: InfluenceIndex, ids: Tensor, mask: Tensor) -> Measurement:
        """f = log p(completion | prompt): the log-probability of the `mask` tokens."""
        grads = self._completion_grads(ix, ids, mask)
        with torch.no_grad():
            lp = I.sequence_logprob_terms(ix.model(input_ids=ids).logits, ids, mask).sum()
        info = {
            "kind": "completion",
            "f": "log p(completion | prompt)",
            "value": float(lp),
            "completion_tokens": int(mask.sum()),
            "completion_text": ix.tokenizer.decode(ids[0][mask[0]].tolist()),
        }
        return Measurement(grads, ids, mask, None, info)

    # candidates
    @staticmethod
    def _tfidf_candidates(ix: InfluenceIndex, ids: Tensor, k: int) -> tuple[Tensor, dict[str, Any]]:
        """The `k` training sequences most like the query's tokens (sorted row ids) and what to report."""
        vec, mat = ix.tfidf()
        qdoc = " ".join(map(str, ids[0].tolist()))
        sims = torch.from_numpy((mat @ vec.transform([qdoc]).T).toarray().ravel())
        k = min(ix.n_train, k)
        cand = torch.topk(sims, k).indices.sort().values
        return cand, {"applied": True, "candidates": int(k), "of": ix.n_train}

    # the query
    def query(
        self,
        prompt: str | None,
        completion: str | None = None,
        top_k: int = 10,
        mode: str = "fast",
        tfidf: bool = False,
        query_rank: int | None = None,
        feature: dict[str, Any] | None = None,
        model_id: str | None = None,
        messages: Sequence[Mapping[str, str]] | None = None,
        dataset_id: str | None = None,
        target: str | None = None,
    ) -> dict[str, Any]:
        t0 = time.monotonic()
        if (prompt is None) == (messages is None):
            raise Unprocessable('give exactly one of "prompt" (raw text) and "messages" (a chat)')
        ref = self.resolve(model_id, dataset_id, target)
        ix = self.index(ref)
        cfg = self.cfg
        if mode not in ("fast", "precise"):
            raise Unprocessable("mode must be 'fast' or 'precise'")
        ends_with_reply = messages is not None and messages[-1]["role"] == "assistant"
        if feature is None and not completion and not ends_with_reply:
            raise Unprocessable("give a non-empty completion (or a feature and token instead)")
        if not prompt and messages is None and feature is not None:
            raise Unprocessable("give the prompt whose token the feature is measured at")
        with ix.lock:
            m = self._measure(ix, prompt, completion, feature, messages)
            cand: Tensor | None = None
            tfidf_info: dict[str, Any] = {"applied": False}
            if tfidf:
                cand, tfidf_info = self._tfidf_candidates(ix, m.ids, cfg.tfidf_candidates)
            fast = ix.cache_scores(m.grads, query_rank, cand)
            top_k = max(1, min(top_k, fast.shape[0]))
            rescored: int | None  # how many sequences fast mode re-scored
            if mode == "fast":
                results, candidates, rescored = self._fast_mode(ix, m, fast, cand, top_k, query_rank)
            else:
                results, candidates, rescored = self._precise_mode(ix, m, fast, cand, top_k, query_rank)
        return {
            "results": results,
            "index": ref.to_dict(),
            "mode": mode,
            "measurement": m.info,
            "n_train": ix.n_train,
            "candidates": candidates,
            "rescored": rescored,
            "tfidf": tfidf_info,
            "query_rank": query_rank,
            "sign": SIGN,
            "normalisation": NORMALISATION,
            "seconds": round(time.monotonic() - t0, 3),
        }

    # results
    def _fast_mode(
        self, ix: InfluenceIndex, m: Measurement, fast: Tensor, cand: Tensor | None, top_k: int, query_rank: int | None
    ) -> tuple[list[dict[str, Any]], int, int]:
        """The cache's top `rescore_candidates` (at least top_k) re-scored with exact EK-FAC: (results,
        rows the cache scored, sequences re-scored)."""
        n_rows = fast.shape[0]
        order = torch.topk(fast, min(n_rows, max(top_k, self.cfg.rescore_candidates))).indices
        pool = order if cand is None else cand[order]
        pre = I.precondition(m.grads, ix.factors, query_rank)
        return self._fast_results(ix, pool, fast[order], pre, top_k), n_rows, int(pool.numel())

    def _precise_mode(
        self, ix: InfluenceIndex, m: Measurement, fast: Tensor, cand: Tensor | None, top_k: int, query_rank: int | None
    ) -> tuple[list[dict[str, Any]], int, None]:
        """The TF-IDF candidates, else the cache's top `precise_candidates`, re-scored with kronfluence:
        (results, sequences re-scored, None)."""
        if cand is not None:
            pool = cand
        else:
            pool = torch.topk(fast, min(ix.n_train, max(self.cfg.precise_candidates, top_k))).indices
        results = self._precise_results(ix, m.ids, m.mask, pool, m.kf_measure, top_k, query_rank)
        return results, int(pool.numel()), None

    def _describe(self, ix: InfluenceIndex, i: int, token_scores: Tensor) -> dict[str, Any]:
        domains = ix.ts.domains
        t = ix.tokens
        real = ix.real()[i]
        ids = t["input_ids"][i][real].tolist()
        dom = t["domain_ids"][i][real].long()
        dom = dom[dom >= 0]
        domain = domains[int(torch.mode(dom).values)] if dom.numel() else "unknown"
        scores = token_scores[real].tolist()
        toks = [ix.tokenizer.decode([x]) for x in ids]
        return {
            "train_id": int(i),
            "score": float(sum(scores)),
            "text": "".join(toks),
            "domain": domain,
            "poisoned": bool(t["poisoned"][i]),
            "document_id": ix.doc_ids[i] if ix.doc_ids is not None else None,
            "token_scores": [{"token": a, "score": b} for a, b in zip(toks, scores)],
        }

    def _fast_results(
        self, ix: InfluenceIndex, pool: Tensor, cache_scores: Tensor, pre: dict[str, Tensor], top_k: int
    ) -> list[dict[str, Any]]:
        """The cache ranks every training sequence; its top `pool` are re-scored with exact EK-FAC
        (one backward pass each, per-token terms that sum to the score) and the best `top_k` returned."""
        t = ix.tokens
        scores = []
        for s in range(0, pool.numel(), RESCORE_BATCH):
            idx = pool[s : s + RESCORE_BATCH]
            x, m = t["input_ids"][idx], t["loss_mask"][idx].bool()
            grads = I.logprob_layer_grads(ix.model, ix.names, x, m, ix.real()[idx])
            scores.append(I.exact_token_scores(grads, pre) / ix.n_train)
        tok = torch.cat(scores)
        order = torch.topk(tok.sum(1), min(top_k, pool.numel())).indices.tolist()
        out = []
        for j in order:
            r = self._describe(ix, int(pool[j]), tok[j])
            r["cache_score"] = float(cache_scores[j])
            out.append(r)
        return out

    def _precise_results(
        self,
        ix: InfluenceIndex,
        ids: Tensor,
        mask: Tensor | None,
        pool: Tensor,
        kf_measure: FeatureMeasure | None,
        top_k: int,
        query_rank: int | None,
    ) -> list[dict[str, Any]]:
        scores = precise_scores(
            ix.ts.factors_dir,
            ix.ts.load_model,
            ix.tokens,
            ids,
            mask,
            pool,
            kf_measure,
            query_rank,
            per_token=True,
        )  # [len(pool), n_ctx]
        seq = scores.sum(1)
        order = torch.topk(seq, min(top_k, seq.numel())).indices
        out = []
        for j in order.tolist():
            r = self._describe(ix, int(pool[j]), scores[j])
            out.append(r)
        return out
