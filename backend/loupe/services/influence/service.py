"""Influence queries: which training sequences made a completion likely, or built an SAE feature.

One gradient of the measurement, rotated, whitened and rounded, against every packed row of the
cache; TF-IDF candidate filtering (optional); in fast mode the cache's top `rescore_candidates`
re-scored with exact EK-FAC (per-token terms); in precise mode the candidates re-scored with
kronfluence's exact pairwise scores (per token)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import AutoTokenizer

from loupe.core import influence as I
from loupe.core import packed as P
from loupe.errors import Conflict, NotFound, Unprocessable
from loupe.services.activations import real_positions
from loupe.services.datasets import Subject
from loupe.services.influence.config import CACHE_FORMAT, QUERY_TIME_FIELDS, InfluenceConfig
from loupe.services.influence.hooks import HookCapture, sae_feature_value
from loupe.services.influence.index import InfluenceIndex, load_factors
from loupe.services.influence.precise import FeatureMeasure, precise_scores
from loupe.services.models import load_hf_model
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


class InfluenceService:
    """Queries over the influence index of one subject (the world's model and its training set)."""

    def __init__(self, ws: Workspace, saes: SAERegistry, subject: Subject | None, cfg: InfluenceConfig | None):
        self.ws = ws
        self.saes = saes
        self.subject = subject
        self.preset = cfg  # the world's settings; their query-time fields apply to any built index
        self.cfg: InfluenceConfig | None = None  # the index's, once loaded
        self._index: InfluenceIndex | None = None
        self._lock = threading.Lock()

    # state
    @property
    def factors_dir(self) -> Path:
        return self.ws.artifact("influence", "factors")

    def _dirs(self) -> tuple[Path, Path]:
        root = self.ws.artifact("influence")
        return root / "factors", root / "gradients"

    def ready(self) -> bool:
        """Factors and a gradient cache built from them (a cache of an older format or of other factors
        is stale: the build's influence.gradients step replaces it)."""
        if self.subject is None:
            return False
        f, g = self._dirs()
        fm, gm = read_manifest(f), read_manifest(g)
        return (
            fm is not None
            and gm is not None
            and gm.get("factors_key") == fm.get("key")
            and gm.get("format") == CACHE_FORMAT
            and all((g / s["file"]).is_file() for s in gm.get("shards", []))
        )

    def check_model(self, model_id: str | None) -> None:
        """A 409 for a model other than the one the index is of (None: the index's model)."""
        if model_id is None or (self.subject is not None and model_id == self.subject.model_id):
            return
        own = f"model {self.subject.model_id!r} and its training set" if self.subject else "no model"
        raise Conflict(
            f"influence is not built for model {model_id!r}: this workspace's index is of {own}. Influence "
            "needs the training data of the model it explains, which Loupe has for the models it trains "
            "(the demo world: LOUPE_WORLD=demo loupe build)"
        )

    def not_ready(self) -> Conflict:
        if self.subject is None or self.preset is None:
            world = self.ws.settings.world
            return Conflict(
                f"influence is not part of this world's build (LOUPE_WORLD={world}): it needs the training "
                "data of the model it explains, which Loupe has for the models it trains; the demo world "
                "builds it (LOUPE_WORLD=demo loupe build)"
            )
        parts = []
        for name in ("influence.factors", "influence.gradients"):
            job = self.ws.jobs.latest(name)
            if job is None:
                parts.append(f"{name}: not started")
            else:
                total = f"/{job.progress_total:,.0f}" if job.progress_total else ""
                parts.append(f"{name}: {job.status} {job.progress_done:,.0f}{total} {job.message}".strip())
        return Conflict("influence factors are not built yet (" + "; ".join(parts) + "); see /api/jobs")

    def store_evaluation(self, results: dict[str, Any]) -> int:
        """`loupe eval influence`'s results as an eval row and evals/influence/results.json; the row's id."""
        row = self.ws.evals.add("influence", self.subject.model_id if self.subject else "", results)
        with atomic_dir(self.ws.artifact("evals", "influence")) as tmp:
            (tmp / "results.json").write_text(json.dumps(results, indent=1))
            write_manifest(tmp, {"eval_id": row.id})
        return row.id

    def index(self) -> InfluenceIndex:
        if not self.ready():
            raise self.not_ready()
        with self._lock:
            if self._index is None:
                self._index = self._load()
            return self._index

    def _load(self) -> InfluenceIndex:
        assert self.subject is not None  # ready() said so
        fdir, gdir = self._dirs()
        fm, gm = read_manifest(fdir) or {}, read_manifest(gdir) or {}
        model_dir = self.subject.model_dir
        factors = load_factors(fdir)
        cfg = InfluenceConfig.from_dict(fm["config"])
        if self.preset is not None:  # query-time settings are the world's, not those of the build
            cfg = replace(cfg, **{k: getattr(self.preset, k) for k in QUERY_TIME_FIELDS})
        projs = I.make_projection(factors, int(gm["dim"]))
        packed = P.concat([P.from_tensors(load_tensors(gdir / s["file"]), int(gm["dim"])) for s in gm["shards"]])
        tokens = load_tensors(self.subject.tokens("train"))
        model = load_hf_model(model_dir)
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        self.cfg = cfg
        return InfluenceIndex(
            model=model,
            tokenizer=tok,
            names=list(factors),
            factors=factors,
            projs=projs,
            packed=packed,
            tokens=tokens,
            n_ctx=int(model.config.max_position_embeddings),
            lock=threading.Lock(),
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
        self, ix: InfluenceIndex, prompt: str, completion: str | None, feature: dict[str, Any] | None
    ) -> Measurement:
        if feature is not None:
            return self._measure_feature(ix, prompt, feature)
        return self._measure_completion(ix, prompt, completion or "")

    def _measure_feature(self, ix: InfluenceIndex, prompt: str, feature: dict[str, Any]) -> Measurement:
        """f = the SAE feature's pre-activation at one token of the prompt (default: the last)."""
        sae, hook, feat = self._feature(feature)
        ids, _ = self._encode(ix, prompt, "")
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

    def _measure_completion(self, ix: InfluenceIndex, prompt: str, completion: str) -> Measurement:
        """f = log p(completion | prompt)."""
        ids, mask = self._encode(ix, prompt, completion)
        grads = self._completion_grads(ix, ids, mask)
        with torch.no_grad():
            lp = I.sequence_logprob_terms(ix.model(input_ids=ids).logits, ids, mask).sum()
        info = {
            "kind": "completion",
            "f": "log p(completion | prompt)",
            "value": float(lp),
            "completion_tokens": int(mask.sum()),
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
        prompt: str,
        completion: str | None = None,
        top_k: int = 10,
        mode: str = "fast",
        tfidf: bool = False,
        query_rank: int | None = None,
        feature: dict[str, Any] | None = None,
        model_id: str | None = None,
    ) -> dict[str, Any]:
        t0 = time.monotonic()
        self.check_model(model_id)
        ix = self.index()
        cfg = self.cfg
        assert cfg is not None  # set with the index
        if mode not in ("fast", "precise"):
            raise Unprocessable("mode must be 'fast' or 'precise'")
        if feature is None and not completion:
            raise Unprocessable("give a non-empty completion (or a feature and token instead)")
        if not prompt and feature is not None:
            raise Unprocessable("give the prompt whose token the feature is measured at")
        with ix.lock:
            m = self._measure(ix, prompt, completion, feature)
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
        assert self.cfg is not None
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
        assert self.cfg is not None
        if cand is not None:
            pool = cand
        else:
            pool = torch.topk(fast, min(ix.n_train, max(self.cfg.precise_candidates, top_k))).indices
        results = self._precise_results(ix, m.ids, m.mask, pool, m.kf_measure, top_k, query_rank)
        return results, int(pool.numel()), None

    def _describe(self, ix: InfluenceIndex, i: int, token_scores: Tensor) -> dict[str, Any]:
        assert self.subject is not None
        domains = self.subject.dataset.domains
        t = ix.tokens
        real = real_positions(t["loss_mask"][i : i + 1])[0]
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
            grads = I.logprob_layer_grads(ix.model, ix.names, x, m, real_positions(m))
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
        assert self.subject is not None
        scores = precise_scores(
            self.factors_dir,
            self.subject.model_dir,
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
