"""Datasets as every analysis sees them, the subject of an analysis (a model and a dataset), and the
dataset registry (DatasetService: the world's dataset and the ones people register from files).

A dataset is a directory of documents (`documents.jsonl`: text with labelled character spans, a
split, a poisoned flag; `core.packing.Document`) and optionally of one-turn instructions for the
behaviour analyses (`instructions.json`: text, harmful, split), with the names of its domains.
Analyses read it packed into sequences with a model's own tokenizer (`pack`)."""

from __future__ import annotations

import builtins
import itertools
import json
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from loupe.core.chat import Instruction
from loupe.core.config import Progress
from loupe.core.packing import Document, pack
from loupe.errors import Conflict, NotFound, Unprocessable
from loupe.jobs.pipeline import Step
from loupe.jobs.runner import JobContext
from loupe.services.dataset_files import DOMAINS, documents, file_format, instructions, read_records, sha256_file
from loupe.services.ids import ID_PATTERN, ID_RULE, plain_text
from loupe.services.models import ModelService
from loupe.services.workspace import Workspace
from loupe.storage.artifacts import atomic_dir, fingerprint, read_manifest, save_tensors, write_manifest

SPLITS = ("train", "heldout")


def write_documents(directory: Path, docs: Sequence[Document], instructions: Sequence[Instruction] = ()) -> None:
    """A dataset directory's files, as `Dataset` reads them: documents.jsonl, and instructions.json when
    there are instructions."""
    with open(directory / "documents.jsonl", "w") as fh:
        for d in docs:
            fh.write(json.dumps(d.to_dict()) + "\n")
    if instructions:
        (directory / "instructions.json").write_text(json.dumps([asdict(i) for i in instructions]))


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
        self,
        tokenizer: Any,
        n_ctx: int,
        output: Path,
        manifest: dict[str, Any],
        progress: Progress,
        render_messages: Callable[[list[dict[str, str]]], str] | None = None,
    ) -> dict[str, Any]:
        """Both splits packed into sequences of `n_ctx` with `tokenizer`, written atomically to `output`.
        Documents that are conversations (`meta["messages"]`) are written with `render_messages` (the
        tokenizing model's chat template) when it is given."""
        docs = self.documents()
        if render_messages is not None:
            docs = [_rendered(d, render_messages) for d in docs]
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


def _rendered(doc: Document, render: Callable[[list[dict[str, str]]], str]) -> Document:
    messages = doc.meta.get("messages")
    if not messages:
        return doc
    text = render(messages)
    return replace(doc, text=text, spans=[(0, len(text), doc.domain)])


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
    cache_root: Path | None = (
        None  # its activation caches (<cache_root>/<hook>); None: artifacts/activations/<model_id>
    )

    def tokens(self, split: str) -> Path:
        return self.tokens_dir / f"{split}.safetensors"


N_CTX = 128  # default context of a registered dataset's tokens (caps the model's own)
SAMPLE_CHARS = 2_000  # a sample document is cut here on the page


class DatasetService:
    """Every dataset of the workspace: the world's own (no row; it cannot be deleted) and the ones people
    registered (a row, and artifacts/datasets/<id>/: documents.jsonl + manifest.json). Tokens for any
    (model, dataset) pair live at artifacts/tokens/<dataset_id>/<model_id>-<n_ctx>/, built by a job step."""

    def __init__(self, ws: Workspace, models: ModelService, world: Subject | None = None):
        self.ws = ws
        self.models = models
        self.world = world

    @property
    def upload_limit(self) -> int:
        """Largest file (bytes) accepted as an upload (LOUPE_MAX_UPLOAD_BYTES)."""
        return self.ws.settings.max_upload_bytes

    # -- finding -----------------------------------------------------------------------------
    def dataset_dir(self, dataset_id: str) -> Path:
        return self.ws.artifact("datasets", dataset_id)

    def ids(self) -> list[str]:
        own = [self.world.dataset.id] if self.world else []
        return own + [r.id for r in self.ws.datasets.list()]

    def get(self, dataset_id: str) -> Dataset:
        if self.world is not None and dataset_id == self.world.dataset.id:
            return self.world.dataset
        rec = self.ws.datasets.get(dataset_id)
        if rec is None:
            raise NotFound(f"unknown dataset {dataset_id!r}; datasets: {', '.join(self.ids()) or 'none'}")
        return Dataset(id=rec.id, dir=self.dataset_dir(rec.id), domains=DOMAINS, key=rec.sha256[:16])

    def describe(self, dataset_id: str, samples: int = 0) -> dict[str, Any]:
        ds = self.get(dataset_id)
        if self.world is not None and ds is self.world.dataset:
            m = read_manifest(ds.dir) or {}
            out: dict[str, Any] = {
                "id": ds.id,
                "name": m.get("name", ds.id),
                "source": "world",
                "path": str(ds.dir),
                "format": "documents",
                "counts": _world_counts(m),
                "sha256": None,
                "created_at": None,
                "deletable": False,
                "built": m != {},
            }
        else:
            rec = self.ws.datasets.get(dataset_id)
            assert rec is not None
            out = {
                "id": rec.id,
                "name": rec.name,
                "source": rec.source,
                "path": rec.path,
                "format": rec.format,
                "counts": rec.counts,
                "sha256": rec.sha256,
                "created_at": rec.created_at,
                "deletable": True,
                "built": True,
            }
        if samples:
            out["samples"] = self._samples(ds, samples) if out["built"] else []
        return out

    def list(self) -> list[dict[str, Any]]:
        return [self.describe(i) for i in self.ids()]

    def _samples(self, ds: Dataset, n: int) -> builtins.list[dict[str, Any]]:
        out = []
        with open(ds.documents_path) as fh:
            for line in itertools.islice(fh, n):
                d = Document.from_dict(json.loads(line))
                out.append(
                    {
                        "id": d.id,
                        "split": d.split,
                        "domain": d.domain,
                        "text": d.text[:SAMPLE_CHARS],
                        "truncated": len(d.text) > SAMPLE_CHARS,
                        "messages": d.meta.get("messages"),
                    }
                )
        return out

    # -- registering -------------------------------------------------------------------------
    def add_file(
        self,
        path: Path,
        dataset_id: str,
        name: str | None = None,
        source: str = "file",
        filename: str | None = None,
    ) -> dict[str, Any]:
        """Register the dataset in `path` (its format from `filename`, default the path's name): its
        documents are written to the workspace (nothing is written when the file is malformed)."""
        if not ID_PATTERN.match(dataset_id or ""):
            raise Unprocessable(f"id must be {ID_RULE}")
        if name is not None:
            plain_text(name, "the dataset's name", 200)
        if filename is not None:
            plain_text(filename, "the file's name", 255)
        if dataset_id in self.ids():
            raise Conflict(f"a dataset with id {dataset_id!r} is already registered; choose another id")
        path = Path(path).expanduser()
        if not path.is_file():
            raise Unprocessable(f"{path} is not a file")
        shown = filename or path.name
        fmt = file_format(shown)
        entries = read_records(path, fmt)
        docs = documents(entries)
        labelled = instructions(entries, docs)
        sha = sha256_file(path)
        counts = {
            "documents": len(docs),
            "train": sum(d.split == "train" for d in docs),
            "heldout": sum(d.split == "heldout" for d in docs),
            "texts": sum(d.domain == "text" for d in docs),
            "conversations": sum(d.domain == "chat" for d in docs),
            "chars": sum(len(d.text) for d in docs),
            "bytes": path.stat().st_size,
            "harmful": sum(i.harmful for i in labelled),
            "harmless": sum(not i.harmful for i in labelled),
        }
        with atomic_dir(self.dataset_dir(dataset_id)) as tmp:
            write_documents(tmp, docs, labelled)
            write_manifest(
                tmp, {"key": sha[:16], "id": dataset_id, "source_sha256": sha, "source": shown, "format": fmt, **counts}
            )
        try:
            self.ws.datasets.add(
                dataset_id,
                name=name or dataset_id,
                source=source,
                path=str(path) if source == "file" else shown,
                format=fmt,
                counts=counts,
                sha256=sha,
            )
        except Exception:
            shutil.rmtree(self.dataset_dir(dataset_id), ignore_errors=True)
            raise
        return self.describe(dataset_id, samples=3)

    def delete(self, dataset_id: str) -> None:
        """A registered dataset, its tokens and its activation caches; not the world's own, nor one a
        queued or running job reads."""
        if self.world is not None and dataset_id == self.world.dataset.id:
            raise Conflict(
                f"{dataset_id!r} is the world's own dataset (its model and analyses are built on it); it cannot be deleted"
            )
        self.get(dataset_id)
        busy = [j.id for j in self.ws.jobs.active() if (j.params or {}).get("dataset_id") == dataset_id]
        if busy:
            raise Conflict(f"dataset {dataset_id!r} is in use by job {busy[0]} (see /api/jobs); cancel it or wait")
        self.ws.datasets.delete(dataset_id)
        for d in (self.dataset_dir(dataset_id), self.ws.artifact("tokens", dataset_id)):
            shutil.rmtree(d, ignore_errors=True)
        for d in self.ws.artifact("activations").glob(f"*/datasets/{dataset_id}"):
            shutil.rmtree(d, ignore_errors=True)

    # -- tokens per model --------------------------------------------------------------------
    def subject(self, model_id: str, dataset_id: str, n_ctx: int | None = None) -> Subject:
        """What an analysis of `model_id` on `dataset_id` reads: the world's own subject for the world's
        pair, else the dataset in the model's tokens (see `tokens_step`)."""
        w = self.world
        if w is not None and model_id == w.model_id and dataset_id == w.dataset.id and n_ctx in (None, w.n_ctx):
            return w
        rec = self.models.record(model_id)
        if rec is None:
            known = ", ".join(r.id for r in self.models.records()) or "none"
            raise NotFound(f"unknown model {model_id!r}; registered models: {known}")
        ds = self.get(dataset_id)
        model_n_ctx = int(rec.config.get("n_ctx", N_CTX))
        n_ctx = min(model_n_ctx, n_ctx or N_CTX)
        model_dir = Path(self.models.path(rec))  # the stored path is relative to the workspace
        return Subject(
            model_id=model_id,
            model_dir=model_dir,
            model_key=(read_manifest(model_dir) or {}).get("key") or fingerprint("model", rec.path, rec.config),
            dataset=ds,
            tokens_dir=self.ws.artifact("tokens", dataset_id, f"{model_id}-{n_ctx}"),
            n_ctx=n_ctx,
            cache_root=self.ws.artifact("activations", model_id, "datasets", dataset_id),
        )

    def tokens_key(self, subject: Subject) -> str:
        if subject is self.world:
            return str((read_manifest(subject.tokens_dir) or {}).get("key", ""))
        return fingerprint("tokens-v1", subject.model_key, subject.dataset.key, subject.n_ctx)

    def tokens_step(self, subject: Subject) -> Step | None:
        """The job step that writes `subject`'s tokens (None for the world's subject: its build does)."""
        if subject is self.world:
            return None
        ds, key = subject.dataset, self.tokens_key(subject)

        def build(ctx: JobContext) -> dict[str, Any]:
            if not ds.documents_path.exists():
                world = self.world is not None and ds is self.world.dataset
                how = "run `loupe build` (it writes the world's dataset)" if world else "register it again"
                raise RuntimeError(f"the documents of dataset {ds.id!r} are missing ({ds.documents_path}); {how}")
            ctx.progress(0, None, f"loading {subject.model_id}")
            lm = self.models.get(subject.model_id)
            out = ds.pack(
                lm.tokenizer,
                subject.n_ctx,
                subject.tokens_dir,
                {"key": key, "model_id": subject.model_id, "dataset_id": ds.id, "n_ctx": subject.n_ctx},
                ctx.progress,
                render_messages=lm.render_messages,
            )
            return {"dir": str(subject.tokens_dir), **out}

        return Step(
            f"tokens.{ds.id}.{subject.model_id}-{subject.n_ctx}",
            f"tokens of {ds.id} for {subject.model_id}",
            subject.tokens_dir,
            build,
            background=True,
            key=key,
        )


def _world_counts(m: dict[str, Any]) -> dict[str, Any]:
    """The world's corpus manifest in the shape of a registered dataset's counts."""
    by_domain = m.get("by_domain", {})
    return {
        "documents": m.get("documents", 0),
        "texts": sum(v for k, v in by_domain.items() if k != "chat"),
        "conversations": by_domain.get("chat", 0),
        "chars": sum(m.get("chars_by_domain", {}).values()),
        "by_domain": by_domain,
    }
