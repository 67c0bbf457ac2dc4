"""Influence queries: which training sequences made a completion likely, or built an SAE feature.

One gradient of the measurement, rotated, whitened and rounded, against every packed row of the
cache; TF-IDF candidate filtering (optional); in fast mode the cache's top `rescore_candidates`
re-scored with exact EK-FAC (per-token terms); in precise mode the candidates re-scored with
kronfluence's exact pairwise scores (per token).

Long because one measurement (a completion, a chat or an SAE feature) feeds every way of answering
it (fast, precise, every score for bench/), all under the index's lock."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from loupe.core import influence as I
from loupe.core import packed as P
from loupe.errors import NotFound, Unprocessable
from loupe.jobs.runner import JobRunner
from loupe.services.datasets import DatasetService, Subject
from loupe.services.influence.config import InfluenceConfig
from loupe.services.influence.hooks import HookCapture, sae_feature_value
from loupe.services.influence.index import InfluenceIndex, encode_chat, load_factors, prompt_tokens
from loupe.services.influence.indexes import InfluenceIndexes
from loupe.services.influence.precise import FeatureMeasure, precise_scores
from loupe.services.influence.training import (
    IndexRef,
    TrainingSet,
)
from loupe.services.models import ModelService
from loupe.services.models.loading import load_tokenizer
from loupe.services.models.registry import chat_format_of
from loupe.services.saes.registry import SAERegistry
from loupe.services.workspace import Workspace
from loupe.storage.artifacts import atomic_dir, load_tensors, read_manifest, write_manifest

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


def _token_position(token: Any, n_tok: int) -> int:
    """The measured token: the last by default, negative indices from the end."""
    pos = n_tok - 1 if token is None else int(token)
    if pos < 0:
        pos += n_tok
    if not 0 <= pos < n_tok:
        raise Unprocessable(f"token {token} is outside the prompt's {n_tok} tokens")
    return pos


MAX_LOADED = 2  # indexes kept in memory at once (each holds a copy of its model)


class InfluenceService(InfluenceIndexes):
    """Queries over the influence indexes (`InfluenceIndexes`: which there are, their builds), each loaded
    once (at most MAX_LOADED at a time)."""

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
        super().__init__(ws, subject, cfg, models, datasets, jobs)
        self.saes = saes
        self.cfg: InfluenceConfig = cfg or InfluenceConfig("default")  # query-time settings
        self._indexes: dict[IndexRef, InfluenceIndex] = {}
        self._lock = threading.Lock()

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

    def _measure(
        self,
        ix: InfluenceIndex,
        prompt: str | None,
        completion: str | None,
        feature: dict[str, Any] | None,
        messages: Sequence[Mapping[str, str]] | None = None,
    ) -> Measurement:
        if feature is not None:
            if messages is not None:
                ids = prompt_tokens(ix, messages)
            else:
                ids = self._encode(ix, prompt or "", "")[0]
            return self._measure_feature(ix, ids, feature)
        if messages is not None:
            ids, mask = encode_chat(ix, messages, completion)
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
        rescore: int | None = None,
    ) -> dict[str, Any]:
        """`rescore` (fast mode): how many of the cache's top sequences are re-scored exactly, at least
        top_k (None: the index's rescore_candidates); 0 serves the cache's ranking alone, without token
        scores: one backward pass (the query's), where each re-scored sequence costs another."""
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
        phases: dict[str, float] = {"index": time.monotonic() - t0}
        with ix.lock:
            t = time.monotonic()
            m = self._measure(ix, prompt, completion, feature, messages)
            phases["measure"], t = time.monotonic() - t, time.monotonic()
            cand: Tensor | None = None
            tfidf_info: dict[str, Any] = {"applied": False}
            if tfidf:
                cand, tfidf_info = self._tfidf_candidates(ix, m.ids, cfg.tfidf_candidates)
            fast = ix.cache_scores(m.grads, query_rank, cand)
            phases["scan"], t = time.monotonic() - t, time.monotonic()
            top_k = max(1, min(top_k, fast.shape[0]))
            rescored: int | None  # how many sequences fast mode re-scored
            if mode == "fast":
                results, candidates, rescored = self._fast_mode(ix, m, fast, cand, top_k, query_rank, rescore)
            else:
                results, candidates, rescored = self._precise_mode(ix, m, fast, cand, top_k, query_rank)
            phases["rescore"] = time.monotonic() - t
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
            "phases": {k: round(v, 3) for k, v in phases.items()},
        }

    def all_scores(
        self,
        prompt: str | None = None,
        completion: str | None = None,
        *,
        messages: Sequence[Mapping[str, str]] | None = None,
        model_id: str | None = None,
        dataset_id: str | None = None,
        target: str | None = None,
        query_rank: int | None = None,
    ) -> tuple[Tensor, Measurement]:
        """The cache's score of every training sequence for a completion's log-probability, in the index's
        row order and normalised as a query's, with the measurement (its gradients and tokens): the whole
        ranking whose top a fast query re-scores, for evaluations that need every score (bench/)."""
        if (prompt is None) == (messages is None):
            raise Unprocessable('give exactly one of "prompt" (raw text) and "messages" (a chat)')
        if not completion and not (messages and messages[-1]["role"] == "assistant"):
            raise Unprocessable("give a non-empty completion, or end the messages with the assistant's turn")
        ix = self.index(self.resolve(model_id, dataset_id, target))
        with ix.lock:
            m = self._measure(ix, prompt, completion, None, messages)
            return ix.cache_scores(m.grads, query_rank), m

    # results
    def _fast_mode(
        self,
        ix: InfluenceIndex,
        m: Measurement,
        fast: Tensor,
        cand: Tensor | None,
        top_k: int,
        query_rank: int | None,
        rescore: int | None,
    ) -> tuple[list[dict[str, Any]], int, int]:
        """The cache's top `rescore` (default rescore_candidates; at least top_k) re-scored with exact EK-FAC,
        or with 0 its top_k as the cache ranks them: (results, rows the cache scored, sequences re-scored)."""
        n_rows = fast.shape[0]
        n = self.cfg.rescore_candidates if rescore is None else rescore
        order = torch.topk(fast, min(n_rows, max(top_k, n) if n else top_k)).indices
        pool = order if cand is None else cand[order]
        if n == 0:
            results = []
            for j, i in zip(order.tolist(), pool.tolist()):
                r = self._describe(ix, int(i), None, float(fast[j]))
                r["cache_score"] = r["score"]
                results.append(r)
            return results, n_rows, 0
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

    def _describe(
        self, ix: InfluenceIndex, i: int, token_scores: Tensor | None, score: float | None = None
    ) -> dict[str, Any]:
        """Training sequence `i` with its per-token scores (None: not computed; then `score` is given)."""
        domains = ix.ts.domains
        t = ix.tokens
        real = ix.real()[i]
        ids = t["input_ids"][i][real].tolist()
        dom = t["domain_ids"][i][real].long()
        dom = dom[dom >= 0]
        domain = domains[int(torch.mode(dom).values)] if dom.numel() else "unknown"
        toks = [ix.tokenizer.decode([x]) for x in ids]
        scores: list[float | None] = [None] * len(toks)
        if token_scores is not None:
            values = token_scores[real].tolist()
            scores, score = values, float(sum(values))
        assert score is not None
        return {
            "train_id": int(i),
            "score": score,
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
        width = t["input_ids"].shape[1]
        scores = []
        for s in range(0, pool.numel(), RESCORE_BATCH):
            idx = pool[s : s + RESCORE_BATCH]
            grads = I.logprob_layer_grads(
                ix.model, ix.names, t["input_ids"][idx], t["loss_mask"][idx].bool(), ix.real()[idx]
            )
            batch_tok = I.exact_token_scores(grads, pre) / ix.n_train
            scores.append(F.pad(batch_tok, (0, width - batch_tok.shape[1])))
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
