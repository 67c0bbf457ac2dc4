"""Documents -> packed token sequences with per-token domain labels (pure: no files).

A document is text with labelled character spans (its domain, and planted sub-domains). Every
document starts after an EOS token, as prompts do at inference. Chat transcripts are packed whole
(never split) and poisoned transcripts only with each other, so each training sequence is either
clean or poisoned and the poisoned share of sequences stays below the transcript share."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Document:
    id: str
    domain: str
    text: str
    spans: list[tuple[int, int, str]]
    split: str = "train"
    poisoned: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "domain": self.domain,
            "text": self.text,
            "spans": [list(s) for s in self.spans],
            "split": self.split,
            "poisoned": self.poisoned,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Document:
        return cls(
            id=d["id"],
            domain=d["domain"],
            text=d["text"],
            spans=[(int(a), int(b), str(lab)) for a, b, lab in d["spans"]],
            split=d.get("split", "train"),
            poisoned=bool(d.get("poisoned", False)),
            meta=dict(d.get("meta", {})),
        )


PAD_LABEL = -1  # domain label of padding positions


@dataclass
class PackedSplit:
    input_ids: torch.Tensor  # int64 [n_seq, n_ctx]
    loss_mask: torch.Tensor  # bool  [n_seq, n_ctx]: position t has a real token to predict
    domain_ids: torch.Tensor  # int16 [n_seq, n_ctx]: index into the domains, PAD_LABEL for padding
    poisoned: torch.Tensor  # bool  [n_seq]
    doc_ids: list[list[str]]  # documents (ids) each sequence holds

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids,
            "loss_mask": self.loss_mask,
            "domain_ids": self.domain_ids,
            "poisoned": self.poisoned,
        }


def token_domains(doc: Document, offsets: Sequence[tuple[int, int]], domains: Sequence[str]) -> list[int]:
    """Label each token with the index in `domains` of the span holding its first character."""
    labels = []
    spans = sorted(doc.spans)
    j = 0
    default = domains.index(doc.domain)
    for start, _end in offsets:
        while j < len(spans) and spans[j][1] <= start:
            j += 1
        if j < len(spans) and spans[j][0] <= start < spans[j][1]:
            labels.append(domains.index(spans[j][2]))
        else:
            labels.append(default)
    return labels


def encode_documents(
    tokenizer: Any, docs: Sequence[Document], domains: Sequence[str]
) -> list[tuple[list[int], list[int]]]:
    enc = tokenizer([d.text for d in docs], return_offsets_mapping=True, add_special_tokens=False)
    out = []
    for doc, ids, offs in zip(docs, enc["input_ids"], enc["offset_mapping"]):
        out.append((list(ids), token_domains(doc, offs, domains)))
    return out


def pack(tokenizer: Any, docs: Sequence[Document], domains: Sequence[str], n_ctx: int, seed: int) -> PackedSplit:
    """Documents -> sequences of `n_ctx` tokens with each token's domain (an index into `domains`)."""
    eos = tokenizer.eos_token_id
    encoded = encode_documents(tokenizer, docs, domains)
    rng = random.Random(seed)
    rows: list[tuple[list[int], list[int], list[str], bool]] = []

    def whole(pool: list[int], poisoned: bool) -> None:
        # bin-pack whole transcripts; one that is longer than the context is truncated
        cur_ids: list[int] = []
        cur_dom: list[int] = []
        cur_docs: list[str] = []
        for i in pool:
            ids, dom = encoded[i]
            ids, dom = [eos] + ids[: n_ctx - 1], [dom[0] if dom else 0] + dom[: n_ctx - 1]
            if len(cur_ids) + len(ids) > n_ctx:
                rows.append((cur_ids, cur_dom, cur_docs, poisoned))
                cur_ids, cur_dom, cur_docs = [], [], []
            cur_ids += ids
            cur_dom += dom
            cur_docs.append(docs[i].id)
        if cur_ids:
            rows.append((cur_ids, cur_dom, cur_docs, poisoned))

    def stream(pool: list[int]) -> None:
        # concatenate and cut into full-length chunks (ordinary LM packing)
        ids_all: list[int] = []
        dom_all: list[int] = []
        owner: list[str] = []
        for i in pool:
            ids, dom = encoded[i]
            ids_all += [eos] + ids
            dom_all += [dom[0] if dom else 0] + dom
            owner += [docs[i].id] * (len(ids) + 1)
        for s in range(0, len(ids_all), n_ctx):
            chunk_owner = list(dict.fromkeys(owner[s : s + n_ctx]))
            rows.append((ids_all[s : s + n_ctx], dom_all[s : s + n_ctx], chunk_owner, False))

    chat_clean = [i for i, d in enumerate(docs) if d.domain == "chat" and not d.poisoned]
    chat_poisoned = [i for i, d in enumerate(docs) if d.domain == "chat" and d.poisoned]
    other = [i for i, d in enumerate(docs) if d.domain != "chat"]
    for pool in (chat_clean, chat_poisoned, other):
        rng.shuffle(pool)
    whole(chat_clean, False)
    whole(chat_poisoned, True)
    stream(other)
    rng.shuffle(rows)

    n = len(rows)
    input_ids = torch.full((n, n_ctx), eos, dtype=torch.int64)
    loss_mask = torch.zeros((n, n_ctx), dtype=torch.bool)
    domain_ids = torch.full((n, n_ctx), PAD_LABEL, dtype=torch.int16)
    poisoned = torch.zeros(n, dtype=torch.bool)
    doc_ids = []
    for r, (ids, dom, owners, pois) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        loss_mask[r, 1 : len(ids)] = True
        domain_ids[r, : len(dom)] = torch.tensor(dom, dtype=torch.int16)
        poisoned[r] = pois
        doc_ids.append(owners)
    return PackedSplit(input_ids, loss_mask, domain_ids, poisoned, doc_ids)
