"""The influence index: EK-FAC factors, the 2-bit gradient cache and the training tokens, loaded
once; the cache's estimate of every training sequence's score for a query gradient; a chat query in the
index model's tokens."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from loupe.core import influence as I
from loupe.core import packed as P
from loupe.core.chat import ChatFormat, validate_messages
from loupe.core.finetune import IGNORE_INDEX
from loupe.errors import Unprocessable
from loupe.services.activations import real_positions
from loupe.services.finetune import conversation_spans, encode_text
from loupe.services.influence.training import TrainingSet
from loupe.services.models.registry import render_chat
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


def _with_bos(tok: Any, text: str) -> list[int]:
    """A rendered prompt's tokens as generate encodes them (`LoadedModel.encode_prompt`): special tokens
    the template writes become their ids, BOS first where the tokenizer has one, never twice."""
    ids = list(tok(text, add_special_tokens=False, split_special_tokens=False)["input_ids"])
    bos = tok.bos_token_id
    return ids if bos is None or (ids and ids[0] == bos) else [bos, *ids]


def encode_chat(
    ix: InfluenceIndex, messages: Sequence[Mapping[str, str]], completion: str | None
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


def prompt_tokens(ix: InfluenceIndex, messages: Sequence[Mapping[str, str]]) -> Tensor:
    """The tokens of messages rendered with the generation prompt (a feature's prompt)."""
    problem = validate_messages(messages)
    if problem is not None:
        raise Unprocessable(problem)
    ids = _with_bos(ix.tokenizer, render_chat(ix.tokenizer, ix.chat, messages, ix.ts.ref.model_id))
    if len(ids) > ix.n_ctx:
        raise Unprocessable(f"the prompt is {len(ids)} tokens; the model's context is {ix.n_ctx}")
    return torch.tensor([ids])
