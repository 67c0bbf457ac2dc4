"""Datasets as every analysis sees them, and the subject of an analysis (a model and a dataset).

A dataset is a directory of documents (`documents.jsonl`: text with labelled character spans, a
split, a poisoned flag; `core.packing.Document`) and optionally of one-turn instructions for the
behaviour analyses (`instructions.json`: text, harmful, split), with the names of its domains.
Analyses read it packed into sequences with a model's own tokenizer (`pack`)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loupe.core.chat import Instruction
from loupe.core.config import Progress
from loupe.core.packing import Document, pack
from loupe.storage.artifacts import atomic_dir, save_tensors, write_manifest

SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class Dataset:
    id: str
    dir: Path  # documents.jsonl, instructions.json (optional), manifest.json
    domains: tuple[str, ...]  # every document domain; packed tokens' labels index into it
    planted_domains: tuple[str, ...] = ()  # domains with per-token ground truth (SAE detectors)
    key: str = ""  # fingerprint of the content; keys of what is built from it include it
    seed: int = 0  # packing order

    @property
    def documents_path(self) -> Path:
        return self.dir / "documents.jsonl"

    def documents(self) -> list[Document]:
        with open(self.documents_path) as fh:
            return [Document.from_dict(json.loads(line)) for line in fh]

    def instructions(self, split: str | None = None) -> list[Instruction]:
        path = self.dir / "instructions.json"
        if not path.exists():
            return []
        rows = json.loads(path.read_text())
        return [Instruction(**r) for r in rows if split is None or r["split"] == split]

    def instruction_sets(
        self, split: str, shuffle_seed: int | None = None, limit: int | None = None
    ) -> tuple[list[str], list[str]]:
        """(harmful, harmless) instruction texts of a split, shuffled with `shuffle_seed` when given."""
        rows = self.instructions(split)
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(rows)
        harmful = [i.text for i in rows if i.harmful][:limit]
        harmless = [i.text for i in rows if not i.harmful][:limit]
        return harmful, harmless

    def pack(
        self, tokenizer: Any, n_ctx: int, output: Path, manifest: dict[str, Any], progress: Progress
    ) -> dict[str, Any]:
        """Both splits packed into sequences of `n_ctx` with `tokenizer`, written atomically to `output`."""
        docs = self.documents()
        out: dict[str, Any] = {}
        with atomic_dir(output) as tmp:
            for n, split in enumerate(SPLITS):
                progress(n, 2, f"tokenizing and packing {split}")
                packed = pack(tokenizer, [d for d in docs if d.split == split], self.domains, n_ctx, self.seed)
                save_tensors(tmp / f"{split}.safetensors", packed.tensors())
                (tmp / f"{split}_sequences.json").write_text(json.dumps(packed.doc_ids))
                out[split] = {
                    "sequences": int(packed.input_ids.shape[0]),
                    "tokens": int(packed.loss_mask.sum()) + int(packed.input_ids.shape[0]),
                    "poisoned_sequences": int(packed.poisoned.sum()),
                }
            write_manifest(tmp, {**manifest, "domains": list(self.domains), **out})
        return out


@dataclass(frozen=True)
class Subject:
    """What an analysis is computed on: a model and a dataset packed in that model's tokens."""

    model_id: str
    model_dir: Path  # Hugging Face directory
    model_key: str  # fingerprint of the model; keys of what is built from it include it
    dataset: Dataset
    tokens_dir: Path  # train/heldout.safetensors: input_ids, loss_mask, domain_ids, poisoned
    n_ctx: int
    seed: int = 0

    def tokens(self, split: str) -> Path:
        return self.tokens_dir / f"{split}.safetensors"
