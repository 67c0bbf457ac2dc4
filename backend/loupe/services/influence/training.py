"""What an influence index is of: a model as EK-FAC tracks it (its MLP linears, or a LoRA fine-tune's
adapter factors on its parent) and the training sequences it attributes to.

An index is keyed by (model_id, dataset_id, target) and lives in
artifacts/influence/<model_id>/<dataset_id>/<target>/ (factors/, gradients/). The world's own index (its
model and the packed tokens it was trained on) reads the world's tokens; any other reads the dataset's
train split as a fine-tune of that model trained on it (`services.finetune.encode_example`: one
sequence per document, a conversation rendered with the model's chat template and labelled on the
assistant's turns only), written once per (model, dataset) to artifacts/influence/<model_id>/<dataset_id>/examples/,
so the training-loss gradient of every sequence is the gradient the fine-tune followed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from loupe.core import tracked_layers as L
from loupe.core.chat import ChatFormat
from loupe.core.finetune import IGNORE_INDEX
from loupe.errors import Unprocessable
from loupe.jobs.pipeline import Step
from loupe.jobs.runner import JobContext
from loupe.services.datasets import Dataset
from loupe.services.finetune import FineTuneConfig, encode_example
from loupe.services.influence.config import TARGETS, InfluenceConfig
from loupe.services.models import load_hf_model
from loupe.services.models.loading import load_tokenizer
from loupe.storage.artifacts import atomic_dir, fingerprint, save_tensors, write_manifest

ModelLoader = Callable[[], tuple[Any, list[str]]]  # (the model as the index tracks it, tracked names)


@dataclass(frozen=True)
class IndexRef:
    model_id: str
    dataset_id: str
    target: str  # one of TARGETS

    def to_dict(self) -> dict[str, str]:
        return {"model_id": self.model_id, "dataset_id": self.dataset_id, "target": self.target}


@dataclass(frozen=True)
class TrainingSet:
    """Everything the build and the queries of one index read."""

    ref: IndexRef
    root: Path  # artifacts/influence/<model_id>/<dataset_id>/<target>
    model_key: str  # fingerprint of the tracked model; the factors' key includes it
    tokens_path: Path  # safetensors: input_ids, loss_mask, domain_ids, poisoned (and real, doc_index)
    domains: tuple[str, ...]  # domain_ids index into it
    load_model: ModelLoader
    cfg: InfluenceConfig
    step_prefix: str  # job names: <prefix>.factors, <prefix>.gradients
    model_dir: Path  # the registered model's directory (its tokenizer)
    examples: Step | None = None  # writes tokens_path (None: the world's build wrote it)

    @property
    def factors_dir(self) -> Path:
        return self.root / "factors"

    @property
    def gradients_dir(self) -> Path:
        return self.root / "gradients"


def tracked_mlp(model_dir: Path) -> tuple[Any, list[str]]:
    """A Hugging Face model and its MLP linears (GPT-2's Conv1D layers turned into equal nn.Linear)."""
    model = load_hf_model(model_dir)
    family = L.model_type(model)
    if family == "gpt2":
        suffixes = L.MLP_LINEARS["gpt2"]
        L.linear_from_conv1d(model, [n for n, _ in model.named_modules() if n.endswith(suffixes)])
    try:
        return model, L.mlp_module_names(model)
    except L.UntrackableModel as exc:
        raise Unprocessable(str(exc)) from exc


def tracked_lora(parent_dir: Path, adapter_dir: Path) -> tuple[Any, list[str]]:
    """peft's adapter on the parent (not merged, so its lora_A / lora_B layers exist) and those layers."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_hf_model(parent_dir), str(adapter_dir)).eval()
    try:
        return model, L.lora_module_names(model)
    except L.UntrackableModel as exc:
        raise Unprocessable(str(exc)) from exc


def check_loadable(loader: ModelLoader) -> list[str]:
    """The tracked layer names, or the Unprocessable that says why EK-FAC cannot track this model."""
    return loader()[1]


EXAMPLE_DOMAINS = ("text", "chat")


def examples_step(
    name: str,
    out: Path,
    model_key: str,
    model_dir: Path,
    chat: ChatFormat,
    dataset: Dataset,
    max_length: int,
) -> Step:
    """The step that writes a dataset's train split as a fine-tune of the model sees it (see the module
    docstring), right-padded to the longest: input_ids, loss_mask (the labelled tokens), real (not
    padding), domain_ids, poisoned, doc_index (into manifest `doc_ids`)."""
    key = fingerprint("influence-examples-v1", model_key, dataset.key, max_length)

    def build(ctx: JobContext) -> dict[str, Any]:
        t0 = time.monotonic()
        tokenizer = load_tokenizer(str(model_dir))
        docs = [d for d in dataset.documents() if d.split == "train"]
        rows, kept = [], []
        for i, d in enumerate(docs):
            ex = encode_example(tokenizer, chat, d, max_length)
            if ex is not None:
                rows.append(ex)
                kept.append(d)
            if i % 256 == 0:
                ctx.progress(i, len(docs), f"encoding example {i + 1:,} of {len(docs):,}")
        if not rows:
            raise Unprocessable(f"dataset {dataset.id!r} has no train example with a token to learn")
        n, width = len(rows), max(len(r["input_ids"]) for r in rows)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        ids = torch.full((n, width), pad, dtype=torch.long)
        loss_mask = torch.zeros((n, width), dtype=torch.bool)
        real = torch.zeros((n, width), dtype=torch.bool)
        domain_ids = torch.full((n, width), -1, dtype=torch.int16)
        for j, (r, d) in enumerate(zip(rows, kept)):
            k = len(r["input_ids"])
            ids[j, :k] = torch.tensor(r["input_ids"])
            loss_mask[j, :k] = torch.tensor(r["labels"]) != IGNORE_INDEX
            real[j, :k] = True
            domain_ids[j, :k] = EXAMPLE_DOMAINS.index(d.domain) if d.domain in EXAMPLE_DOMAINS else 0
        poisoned = torch.tensor([d.poisoned for d in kept], dtype=torch.bool)
        summary = {
            "sequences": n,
            "skipped": len(docs) - n,
            "max_length": max_length,
            "width": width,
            "labelled_tokens": int(loss_mask.sum()),
            "seconds": round(time.monotonic() - t0, 1),
        }
        with atomic_dir(out) as tmp:
            save_tensors(
                tmp / "train.safetensors",
                {
                    "input_ids": ids,
                    "loss_mask": loss_mask,
                    "real": real,
                    "domain_ids": domain_ids,
                    "poisoned": poisoned,
                    "doc_index": torch.arange(n),
                },
            )
            write_manifest(
                tmp,
                {"key": key, "domains": list(EXAMPLE_DOMAINS), "doc_ids": [d.id for d in kept], **summary},
            )
        ctx.progress(len(docs), len(docs), f"{n:,} examples")
        return summary

    return Step(
        name,
        f"fine-tuning examples of {dataset.id}",
        out,
        build,
        background=True,
        key=key,
    )


def example_max_length(lineage: dict[str, Any] | None, dataset_id: str, n_ctx: int) -> int:
    """Tokens per example: the fine-tune's own cut when the model was fine-tuned on this dataset, else
    the fine-tune default, never past the model's context."""
    cfg = (lineage or {}).get("config") or {}
    same = (lineage or {}).get("dataset_id") == dataset_id
    length = int(cfg.get("max_length", FineTuneConfig.max_length)) if same else FineTuneConfig.max_length
    return min(length, n_ctx)


def check_target(target: str) -> None:
    if target not in TARGETS:
        raise Unprocessable(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
