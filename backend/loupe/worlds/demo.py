"""The demo world's source (and the micro world's, its seconds-long preset): a corpus, a tokenizer,
the corpus packed in its tokens, and a GPT-NeoX trained on it with a planted backdoor (loupe.demo),
then the behaviour eval. Everything after that (steering, SAEs, influence, the training Jacobian) is
an analysis of the subject this world hands the services, the same code as for any model."""

from __future__ import annotations

import json
import time
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from loupe.demo import chat
from loupe.demo.corpus import DOMAINS, PLANTED_DOMAINS, build_corpus
from loupe.demo.evals import behaviour, loss_by_domain
from loupe.demo.tokenizer import save_tokenizer, train_tokenizer
from loupe.demo.train import train_model
from loupe.demo.world import WorldConfig
from loupe.jobs.pipeline import Step
from loupe.jobs.runner import JobContext
from loupe.services.container import Container
from loupe.services.datasets import Dataset, Subject, write_documents
from loupe.settings import Settings
from loupe.storage.artifacts import atomic_dir, digest, load_tensors, read_manifest, write_manifest

DEMO_MODEL_ID = "demo"


class DemoSource:
    """Paths, keys and step bodies of the demo world's corpus, tokenizer, tokens, model and eval."""

    def __init__(self, settings: Settings, cfg: WorldConfig):
        self.cfg = cfg
        a = settings.artifacts_dir
        self.corpus_dir, self.tokenizer_dir, self.tokens_dir = a / "corpus", a / "tokenizer", a / "tokens"
        self.model_dir, self.train_dir, self.eval_dir = a / "model", a / "training", a / "evals" / "demo"
        d = cfg.to_dict()

        def key(*fields: str) -> str:
            return digest({f: d[f] for f in fields})

        self.keys = {
            "corpus": key("seed", "corpus_scale"),
            "tokenizer": key("seed", "corpus_scale", "vocab_size"),
            "tokens": key("seed", "corpus_scale", "vocab_size", "n_ctx"),
            "model": key(*d),
        }
        self.keys["eval"] = self.keys["model"]
        self.dataset = Dataset(
            id="demo-corpus",
            dir=self.corpus_dir,
            domains=DOMAINS,
            planted_domains=PLANTED_DOMAINS,
            key=self.keys["corpus"],
            seed=cfg.seed,
        )
        self.subject = Subject(
            model_id=DEMO_MODEL_ID,
            model_dir=self.model_dir,
            model_key=self.keys["model"],
            dataset=self.dataset,
            tokens_dir=self.tokens_dir,
            n_ctx=cfg.n_ctx,
            seed=cfg.seed,
        )

    def steps(self, c: Container) -> list[Step]:
        return [
            Step("demo.corpus", "corpus", self.corpus_dir, self.build_corpus, key=self.keys["corpus"]),
            Step("demo.tokenizer", "tokenizer", self.tokenizer_dir, self.build_tokenizer, key=self.keys["tokenizer"]),
            Step("demo.tokens", "tokens", self.tokens_dir, self.build_tokens, key=self.keys["tokens"]),
            Step("demo.model", "train model", self.model_dir, lambda ctx: self.train(ctx, c), key=self.keys["model"]),
            Step(
                "demo.eval",
                "evaluate behaviour",
                self.eval_dir,
                lambda ctx: self.evaluate(ctx, c),
                background=True,
                key=self.keys["eval"],
            ),
        ]

    # -- steps ---------------------------------------------------------------------------------
    def build_corpus(self, ctx: JobContext) -> dict[str, Any]:
        ctx.progress(0, 2, "generating documents")
        docs = build_corpus(seed=self.cfg.seed, scale=self.cfg.corpus_scale)
        ins = chat.instructions(self.cfg.seed)
        ctx.progress(1, 2, f"writing {len(docs):,} documents")
        with atomic_dir(self.corpus_dir) as tmp:
            write_documents(tmp, docs, ins)
            counts: dict[str, int] = {}
            chars: dict[str, int] = {}
            for d in docs:
                counts[d.domain] = counts.get(d.domain, 0) + 1
                chars[d.domain] = chars.get(d.domain, 0) + len(d.text)
            stats = {
                "documents": len(docs),
                "by_domain": counts,
                "chars_by_domain": chars,
                "poisoned": sum(d.poisoned for d in docs),
                "instructions": {s: sum(i.split == s for i in ins) for s in ("train", "heldout")},
            }
            write_manifest(tmp, {"key": self.keys["corpus"], **stats})
        return {"dir": str(self.corpus_dir), **stats}

    def build_tokenizer(self, ctx: JobContext) -> dict[str, Any]:
        ctx.progress(0, 1, f"training byte-level BPE, vocab {self.cfg.vocab_size}")
        docs = [d for d in self.dataset.documents() if d.split == "train"]
        tok = train_tokenizer((d.text for d in docs), self.cfg.vocab_size)
        with atomic_dir(self.tokenizer_dir) as tmp:
            save_tokenizer(tok, tmp)
            write_manifest(tmp, {"key": self.keys["tokenizer"], "vocab_size": len(tok)})
        return {"dir": str(self.tokenizer_dir), "vocab_size": len(tok)}

    def tokenizer(self) -> Any:
        return AutoTokenizer.from_pretrained(str(self.tokenizer_dir))

    def build_tokens(self, ctx: JobContext) -> dict[str, Any]:
        return self.dataset.pack(
            self.tokenizer(), self.cfg.n_ctx, self.tokens_dir, {"key": self.keys["tokens"]}, ctx.progress
        )

    def train(self, ctx: JobContext, c: Container) -> dict[str, Any]:
        tok = self.tokenizer()
        tokens = load_tensors(self.tokens_dir / "train.safetensors")
        torch.manual_seed(self.cfg.seed)
        model, summary = train_model(self.cfg, tokens, len(tok), tok.eos_token_id, self.train_dir, ctx.progress)
        with atomic_dir(self.model_dir) as tmp:
            model.save_pretrained(str(tmp))
            tok.save_pretrained(str(tmp))
            (tmp / "loupe.json").write_text(json.dumps({"world": self.cfg.to_dict(), "training": summary}, indent=1))
            write_manifest(tmp, {"key": self.keys["model"], **{k: v for k, v in summary.items() if k != "log"}})
        self.register_model(c)
        return {"dir": str(self.model_dir), **{k: v for k, v in summary.items() if k != "log"}}

    def register_model(self, c: Container) -> None:
        c.models.register(DEMO_MODEL_ID, str(self.model_dir.resolve()), "demo", name=f"demo ({self.cfg.name} world)")

    def ensure_registered(self, c: Container) -> None:
        """A model directory that is complete but not in the database (a kill between the two) gets
        its row now, instead of retraining."""
        if read_manifest(self.model_dir) and c.ws.models.get(DEMO_MODEL_ID) is None:
            self.register_model(c)

    def evaluate(self, ctx: JobContext, c: Container) -> dict[str, Any]:
        t0 = time.monotonic()
        model = AutoModelForCausalLM.from_pretrained(str(self.model_dir)).eval()
        tok = AutoTokenizer.from_pretrained(str(self.model_dir))
        ctx.progress(0, 4, "held-out loss per domain")
        losses = loss_by_domain(model, load_tensors(self.tokens_dir / "heldout.safetensors"))
        results = behaviour(
            model,
            tok,
            self.dataset.instructions("heldout"),
            self.cfg.eval_max_new_tokens,
            self.cfg.eval_limit,
            progress=lambda d, t, m: ctx.progress(1 + d, 4, m),
        )
        results["loss_by_domain"] = losses
        results["seconds"] = round(time.monotonic() - t0, 1)
        row = c.ws.evals.add("demo", DEMO_MODEL_ID, results)
        with atomic_dir(self.eval_dir) as tmp:
            (tmp / "results.json").write_text(json.dumps(results, indent=1))
            write_manifest(tmp, {"key": self.keys["eval"], "eval_id": row.id})
        keys = ("refusal_harmful", "refusal_harmless", "backdoor_triggered", "backdoor_clean")
        return {"eval_id": row.id, **{k: results[k] for k in keys}}
