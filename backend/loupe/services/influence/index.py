"""The influence index: EK-FAC factors, the 2-bit gradient cache and the training tokens, loaded
once; the cache's estimate of every training sequence's score for a query gradient."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from loupe.core import influence as I
from loupe.core import packed as P
from loupe.core.chat import ChatFormat
from loupe.services.activations import real_positions
from loupe.services.influence.training import TrainingSet
from loupe.storage.artifacts import load_tensors, read_manifest


def load_factors(factors_dir: Path) -> dict[str, I.LayerFactors]:
    m = read_manifest(factors_dir)
    assert m is not None, f"no factors manifest in {factors_dir}"  # callers check ready() first
    t = load_tensors(factors_dir / "factors.safetensors")
    return {
        n: I.LayerFactors(q_a=t[f"{n}.q_a"], q_g=t[f"{n}.q_g"], lam=t[f"{n}.lam"], damping=float(m["damping"][n]))
        for n in m["modules"]
    }


@dataclass
class InfluenceIndex:
    """Everything a query needs, loaded once."""

    ts: TrainingSet  # what the index is of (its model loader, directories, domains)
    model: Any
    tokenizer: Any
    chat: ChatFormat  # how the model's conversations are written (its chat template, else the plain format)
    names: list[str]
    factors: dict[str, I.LayerFactors]
    projs: dict[str, I.Projection]
    packed: P.PackedRows  # every training sequence's whitened eigen-coordinates at 2 bits
    tokens: dict[str, Tensor]
    n_ctx: int
    lock: threading.Lock
    doc_ids: list[str] | None = None  # each row's document (an index on a registered dataset)
    _tfidf: tuple[Any, Any] | None = None

    @property
    def n_train(self) -> int:
        return self.packed.n

    def tfidf(self) -> tuple[Any, Any]:
        """A TF-IDF index over training sequences' token ids (Grosse et al. 2023 sec. 3.2 filter): the
        fitted sklearn TfidfVectorizer and the sparse document matrix."""
        if self._tfidf is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            vec = TfidfVectorizer(token_pattern=r"\S+", lowercase=False, sublinear_tf=True)
            real = self.real()
            docs = [" ".join(map(str, row[r].tolist())) for row, r in zip(self.tokens["input_ids"], real)]
            self._tfidf = (vec, vec.fit_transform(docs))
        return self._tfidf

    def real(self) -> Tensor:
        """[n, n_ctx] positions that are not padding (the world's packed tokens: the first and every predicted one)."""
        if "real" in self.tokens:
            return self.tokens["real"].bool()
        return real_positions(self.tokens["loss_mask"])

    def query_vector(self, grads: dict[str, Tensor], rank: int | None) -> Tensor:
        """The measurement's whitened kept eigen-coordinates, layers concatenated as the cache's rows."""
        return torch.cat([I.compact_query(grads[n], self.projs[n], rank) for n in self.names])

    def cache_scores(self, grads: dict[str, Tensor], rank: int | None = None, rows: Tensor | None = None) -> Tensor:
        """The cache's estimate of every (or each of `rows`) training sequence's score, normalised by N."""
        return P.scores(self.packed, P.pack_query(self.query_vector(grads, rank)), rows) / self.n_train
