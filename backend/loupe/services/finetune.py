"""Fine-tuning any registered model on a dataset, as a job: full fine-tuning or LoRA (peft), with
transformers' Trainer for the loop, checkpoints and resuming. The result is registered as a new
model that records its parent, its dataset and its settings.

    artifacts/finetunes/<model_id>/   checkpoints/ (Trainer's, for resuming after a crash),
                                      history.json (the loss curve so far)
    artifacts/models/<model_id>/      the tuned model, a Hugging Face directory (safetensors; a LoRA
                                      run is merged into the weights, its adapter kept in adapter/)

Conversations are rendered with the parent's chat template (its plain format where it has none)
and trained on the assistant's turns only; plain-text documents are trained on whole."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from loupe.core.chat import ChatFormat
from loupe.core.config import Config, Progress
from loupe.core.finetune import IGNORE_INDEX, labels_in_spans, turn_spans
from loupe.core.packing import Document
from loupe.errors import NotFound, Unprocessable
from loupe.jobs.runner import JobContext, JobRunner
from loupe.services.datasets import DatasetService
from loupe.services.ids import ID_PATTERN, ID_RULE
from loupe.services.models import ModelService
from loupe.services.models.loading import load_tokenizer
from loupe.services.workspace import Workspace
from loupe.storage.artifacts import atomic_dir, atomic_write_bytes, write_manifest
from loupe.storage.models import Job

METHODS = ("lora", "full")
KIND = "finetune"


@dataclass(frozen=True)
class FineTuneConfig(Config):
    method: str = "lora"  # lora | full
    max_steps: int = 200
    learning_rate: float | None = None  # None: 2e-4 for LoRA, 2e-5 for full fine-tuning
    batch_size: int = 8
    max_length: int = 256  # tokens per example (longer ones are cut)
    lora_r: int = 8
    lora_alpha: int = 16
    target_modules: tuple[str, ...] | None = None  # None: peft's default for the architecture
    # LoRA only in these blocks (None: all). Upper blocks only also shortens the backward pass, which
    # stops at the lowest adapted block: on 2 cores that is what keeps a real model's tune affordable.
    lora_layers: tuple[int, ...] | None = None
    save_steps: int = 50
    max_heldout: int = 64  # held-out examples for the loss before and after
    seed: int = 0
    data_seed: int | None = None  # the order of the training examples alone (None: `seed`'s); the LDS
    # bench's seed-to-seed ceiling retrains with another order and the same LoRA initialisation

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 2e-4 if self.method == "lora" else 2e-5


def _render_text(tokenizer: Any, messages: Sequence[Mapping[str, str]], generation_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(
        [{"role": m["role"], "content": m["content"]} for m in messages],
        tokenize=False,
        add_generation_prompt=generation_prompt,
    )
    return str(text)


def conversation_spans(
    tokenizer: Any, chat: ChatFormat, messages: Sequence[Mapping[str, str]]
) -> tuple[str, list[tuple[int, int]]]:
    """(the whole conversation as training text, the character spans of the assistant's turns). With
    a chat template, each turn's span runs from after the assistant header to the template's end of
    turn; in the plain format, the last reply ends with the EOS token's text (so the model learns to
    stop)."""
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if getattr(tokenizer, "chat_template", None):
        full = _render_text(tokenizer, messages, False)
        pairs = [
            (_render_text(tokenizer, messages[:i], True), _render_text(tokenizer, messages[: i + 1], False))
            for i in turns
        ]
    else:
        eos = tokenizer.eos_token or ""
        full = chat.render(messages) + (eos if messages[-1]["role"] == "assistant" else "")
        pairs = [(chat.render(messages[:i]), chat.render(messages[: i + 1])) for i in turns]
        if pairs and turns[-1] == len(messages) - 1:
            pairs[-1] = (pairs[-1][0], full)
    return full, turn_spans(pairs, full)


def encode_example(tokenizer: Any, chat: ChatFormat, doc: Document, max_length: int) -> dict[str, list[int]] | None:
    """input_ids and labels of one document (None when no labelled token survives the cut): a
    conversation (`meta["messages"]`) is trained on its assistant turns, a text on all of it. BOS
    first where the tokenizer has one, never twice (as `LoadedModel.encode_prompt`)."""
    messages = doc.meta.get("messages")
    if messages:
        try:
            text, spans = conversation_spans(tokenizer, chat, messages)
        except ValueError as exc:
            raise Unprocessable(f"document {doc.id}: {exc}") from exc
    else:
        text, spans = doc.text, [(0, len(doc.text))]
    ex = encode_text(tokenizer, text, spans, max_length)
    if all(t == IGNORE_INDEX for t in ex["labels"][1:]):  # the first label is never predicted
        return None
    return ex


def encode_text(tokenizer: Any, text: str, spans: Sequence[tuple[int, int]], max_length: int) -> dict[str, list[int]]:
    """input_ids and labels of a text trained on its character `spans` (BOS first where the tokenizer
    has one, never twice), cut at `max_length` tokens."""
    enc = tokenizer(text, add_special_tokens=False, split_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    bos = tokenizer.bos_token_id
    if bos is not None and (not ids or ids[0] != bos):
        ids, offsets = [bos, *ids], [(0, 0), *offsets]
    labels = labels_in_spans(ids, offsets, spans)[:max_length]
    return {"input_ids": ids[:max_length], "labels": labels}


def _collate(pad_id: int):  # type: ignore[no-untyped-def]
    def collate(rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        n = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), n), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, r in enumerate(rows):
            k = len(r["input_ids"])
            ids[i, :k] = torch.tensor(r["input_ids"])
            labels[i, :k] = torch.tensor(r["labels"])
            mask[i, :k] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return collate


def last_checkpoint(directory: Path) -> str | None:
    """The newest complete Trainer checkpoint under `directory` (its trainer_state.json is written last)."""
    done = [p for p in directory.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    if not done:
        return None
    return str(max(done, key=lambda p: int(p.name.split("-")[1])))


class FineTuneService:
    def __init__(self, ws: Workspace, models: ModelService, datasets: DatasetService, jobs: JobRunner):
        self.ws = ws
        self.models = models
        self.datasets = datasets
        self.jobs = jobs

    def run_dir(self, model_id: str) -> Path:
        return self.ws.artifact("finetunes", model_id)

    def model_dir(self, model_id: str) -> Path:
        return self.ws.artifact("models", model_id)

    def start(
        self,
        parent: str,
        dataset_id: str,
        model_id: str,
        cfg: FineTuneConfig,
        listeners: Sequence[Progress] = (),
    ) -> Job:
        """Queue a fine-tune of `parent` on `dataset_id`'s train split into a new model `model_id`
        (`listeners`: progress callbacks besides the job row's, e.g. the CLI's bar)."""
        rec = self.models.record(parent)
        if rec is None:
            raise NotFound(f"unknown model {parent!r}")
        self.datasets.get(dataset_id)
        if not ID_PATTERN.match(model_id):
            raise Unprocessable(f"model_id must be {ID_RULE}")
        if self.models.record(model_id) is not None:
            raise Unprocessable(f"a model with id {model_id!r} already exists; choose another id")
        if cfg.method not in METHODS:
            raise Unprocessable(f"method must be one of {', '.join(METHODS)}, not {cfg.method!r}")
        params = json.loads(
            json.dumps({"parent": parent, "dataset_id": dataset_id, "model_id": model_id, "config": cfg.to_dict()})
        )  # as the job row gives it back (tuples become lists)
        running = [j for j in self.ws.jobs.active() if j.kind == KIND and j.params.get("model_id") == model_id]
        if running and running[0].params != params:  # the same request joins it (dedupe below)
            raise Unprocessable(f"model {model_id!r} is already being fine-tuned by job {running[0].id}")
        return self.jobs.submit(
            KIND,
            f"finetune.{model_id}",
            params,
            lambda ctx: self.train(ctx, parent, dataset_id, model_id, cfg, listeners),
            dedupe=f"finetune:{json.dumps(params, sort_keys=True)}",
        )

    def _examples(
        self, parent: str, dataset_id: str, cfg: FineTuneConfig, split: str
    ) -> tuple[list[dict[str, list[int]]], int]:
        rec = self.models.record(parent)
        assert rec is not None  # checked by start()
        tokenizer = load_tokenizer(self.models.path(rec))
        chat = self.models.chat_format(parent)
        docs = [d for d in self.datasets.get(dataset_id).documents() if d.split == split]
        out = [e for d in docs if (e := encode_example(tokenizer, chat, d, cfg.max_length)) is not None]
        return out, len(docs) - len(out)

    def train(
        self,
        ctx: JobContext,
        parent: str,
        dataset_id: str,
        model_id: str,
        cfg: FineTuneConfig,
        listeners: Sequence[Progress] = (),
        key: str | None = None,
    ) -> dict[str, Any]:
        """The fine-tune itself, in the calling job (`start` queues it; a world's build step calls it
        with its `key`, written into the model's manifest)."""
        from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

        ctx.listeners.extend(listeners)
        t0 = time.monotonic()
        rec = self.models.record(parent)
        if rec is None:
            raise NotFound(f"unknown model {parent!r}")
        ctx.progress(0, cfg.max_steps, "tokenizing the dataset")
        train, skipped = self._examples(parent, dataset_id, cfg, "train")
        if not train:
            raise Unprocessable(f"dataset {dataset_id!r} has no train example with a token to learn")
        heldout, _ = self._examples(parent, dataset_id, cfg, "heldout")
        heldout = heldout[: cfg.max_heldout]
        tokenizer = load_tokenizer(self.models.path(rec))
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

        torch.manual_seed(cfg.seed)
        model: Any = AutoModelForCausalLM.from_pretrained(self.models.path(rec), dtype=torch.float32)
        if cfg.method == "lora":
            from peft import LoraConfig, get_peft_model

            try:
                lora = LoraConfig(
                    r=cfg.lora_r,
                    lora_alpha=cfg.lora_alpha,
                    lora_dropout=0.0,
                    target_modules=list(cfg.target_modules) if cfg.target_modules else None,
                    layers_to_transform=list(cfg.lora_layers) if cfg.lora_layers else None,
                    task_type="CAUSAL_LM",
                )
                model = get_peft_model(model, lora)
            except ValueError as exc:  # peft knows no default target modules for this architecture
                raise Unprocessable(f"LoRA on model {parent!r}: {exc}; name target_modules") from exc

        run_dir = self.run_dir(model_id)
        checkpoints = run_dir / "checkpoints"
        history_path = run_dir / "history.json"
        resume = last_checkpoint(checkpoints)
        history: list[dict[str, float]] = []
        if resume and history_path.is_file():
            step = int(Path(resume).name.split("-")[1])
            history = [h for h in json.loads(history_path.read_text())["train"] if h["step"] <= step]
        run_dir.mkdir(parents=True, exist_ok=True)

        def write_history(extra: dict[str, Any] | None = None) -> None:
            atomic_write_bytes(history_path, json.dumps({"train": history, **(extra or {})}).encode())

        class Report(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                ctx.check_cancelled()

            def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
                if logs and "loss" in logs:
                    history.append({"step": int(state.global_step), "loss": float(logs["loss"])})
                    write_history()
                    ctx.progress(
                        state.global_step,
                        cfg.max_steps,
                        f"step {state.global_step}/{cfg.max_steps}: loss {logs['loss']:.4f}",
                    )

        args = TrainingArguments(
            output_dir=str(checkpoints),
            max_steps=cfg.max_steps,
            per_device_train_batch_size=cfg.batch_size,
            per_device_eval_batch_size=cfg.batch_size,
            learning_rate=cfg.lr,
            lr_scheduler_type="constant",
            logging_steps=1,
            save_strategy="steps",
            save_steps=cfg.save_steps,
            save_total_limit=1,
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
            seed=cfg.seed,
            data_seed=cfg.data_seed,
            dataloader_pin_memory=False,
            remove_unused_columns=False,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train,
            eval_dataset=heldout or None,
            data_collator=_collate(pad_id),
            callbacks=[Report()],
        )
        before = trainer.evaluate()["eval_loss"] if heldout and not resume else None
        try:
            trainer.train(resume_from_checkpoint=resume)
        except BaseException:
            if ctx.cancel.is_set():  # a cancel is final: no resume state is kept
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        ctx.check_cancelled()
        after = trainer.evaluate()["eval_loss"] if heldout else None
        ctx.progress(cfg.max_steps, cfg.max_steps, "saving the tuned model")

        lineage = {
            "parent": parent,
            "dataset_id": dataset_id,
            "method": cfg.method,
            "config": cfg.to_dict(),
            "train_examples": len(train),
            "skipped_examples": skipped,
            "heldout_loss_before": before,
            "heldout_loss_after": after,
            "final_train_loss": history[-1]["loss"] if history else None,
            "seconds": round(time.monotonic() - t0, 1),
        }
        out = self.model_dir(model_id)
        with atomic_dir(out) as tmp:
            if cfg.method == "lora":
                model.save_pretrained(str(tmp / "adapter"))  # the adapter alone (peft's format)
                merged = model.merge_and_unload()
            else:
                merged = model
            merged.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
            write_manifest(tmp, {"key": key or model_id, **lineage})
        write_history({"heldout_loss_before": before, "heldout_loss_after": after})
        shutil.rmtree(checkpoints, ignore_errors=True)
        self.models.register(
            model_id, str(out), "finetune", name=f"{model_id} ({cfg.method} of {parent})", lineage=lineage
        )
        return {"model_id": model_id, "final_train_loss": lineage["final_train_loss"], "heldout_loss_after": after}

    def runs(self) -> list[dict[str, Any]]:
        """Every fine-tune job, newest first, with its loss curve so far."""
        return [self._run_info(j) for j in self.ws.jobs.list(kind=KIND)]

    def run(self, model_id: str) -> dict[str, Any]:
        jobs = [j for j in self.ws.jobs.list(kind=KIND) if j.params.get("model_id") == model_id]
        if not jobs:
            raise NotFound(f"no fine-tune of a model {model_id!r}")
        return self._run_info(jobs[0])

    def _run_info(self, job: Job) -> dict[str, Any]:
        p = job.params
        path = self.run_dir(p["model_id"]) / "history.json"
        history: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {"train": []}
        return {
            "model_id": p["model_id"],
            "parent": p["parent"],
            "dataset_id": p["dataset_id"],
            "config": p["config"],
            "job_id": job.id,
            "status": job.status,
            "message": job.message,
            "error": job.error,
            "loss": history.get("train", []),
            "heldout_loss_before": history.get("heldout_loss_before"),
            "heldout_loss_after": history.get("heldout_loss_after"),
            "registered": self.models.record(p["model_id"]) is not None,
        }


def loss_figure(run: Mapping[str, Any]) -> dict[str, Any]:
    """The training loss per step (plotly), with the held-out loss before and after as dotted lines."""
    import plotly.graph_objects as go

    steps = [h["step"] for h in run["loss"]]
    fig = go.Figure(go.Scatter(x=steps, y=[h["loss"] for h in run["loss"]], mode="lines", name="train loss"))
    for key, name, dash in (
        ("heldout_loss_before", "held-out, before", "dot"),
        ("heldout_loss_after", "held-out, after", "dash"),
    ):
        v = run.get(key)
        if v is not None and math.isfinite(v) and steps:
            fig.add_trace(
                go.Scatter(x=[min(steps), max(steps)], y=[v, v], mode="lines", name=name, line={"dash": dash})
            )
    fig.update_layout(xaxis_title="step", yaxis_title="cross-entropy (nats/token)", margin={"t": 10, "r": 10})
    out: dict[str, Any] = json.loads(fig.to_json())
    return out
