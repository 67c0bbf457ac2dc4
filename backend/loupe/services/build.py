"""The default workspace's build: corpus -> tokenizer -> tokens -> model (foreground, before
serving) and the analyses that run as background jobs: the behaviour eval, the refusal direction,
SAEs and their dashboards, influence factors and gradient cache, the training-Jacobian run."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from loupe.demo import chat
from loupe.demo.corpus import DOMAINS, Document, build_corpus
from loupe.demo.world import WorldConfig, world_config
from loupe.jobs.pipeline import Pipeline, Step
from loupe.jobs.runner import JobContext
from loupe.services.workspace import Workspace
from loupe.storage.artifacts import atomic_dir, load_tensors, read_manifest, save_tensors, write_manifest

DEMO_MODEL_ID = "demo"


def _key(cfg: WorldConfig, *fields: str) -> str:
    d = cfg.to_dict()
    blob = json.dumps({f: d[f] for f in fields}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_documents(path: Path) -> list[Document]:
    with open(path) as fh:
        return [Document.from_dict(json.loads(line)) for line in fh]


class DemoWorld:
    """Paths and step bodies of the demo world for one workspace."""

    def __init__(self, ws: Workspace, cfg: WorldConfig | None = None):
        self.ws = ws
        self.cfg = cfg or world_config(ws.settings.world, **{"seed": ws.settings.seed, **ws.settings.world_overrides})
        a = ws.artifact
        self.corpus_dir, self.tokenizer_dir, self.tokens_dir = a("corpus"), a("tokenizer"), a("tokens")
        self.model_dir, self.train_dir, self.eval_dir = a("model"), a("training"), a("evals", "demo")
        k = lambda *f: _key(self.cfg, *f)  # noqa: E731
        self.keys = {
            "corpus": k("seed", "corpus_scale"),
            "tokenizer": k("seed", "corpus_scale", "vocab_size"),
            "tokens": k("seed", "corpus_scale", "vocab_size", "n_ctx"),
            "model": k(*self.cfg.to_dict().keys()),
        }
        self.keys["eval"] = self.keys["model"]

    def steps(self) -> list[Step]:
        return [
            Step("demo.corpus", "corpus", self.corpus_dir, self.build_corpus, key=self.keys["corpus"]),
            Step("demo.tokenizer", "tokenizer", self.tokenizer_dir, self.build_tokenizer, key=self.keys["tokenizer"]),
            Step("demo.tokens", "tokens", self.tokens_dir, self.build_tokens, key=self.keys["tokens"]),
            Step("demo.model", "train model", self.model_dir, self.train, key=self.keys["model"]),
            Step(
                "demo.eval", "evaluate behaviour", self.eval_dir, self.evaluate, background=True, key=self.keys["eval"]
            ),
            *self._steering_steps(),
            *self._sae_steps(),
            *self._influence_steps(),
            *self._jacobian_steps(),
        ]

    def _steering_steps(self) -> list[Step]:
        from loupe.services.steering import refusal_vector_id, vector_dir

        key = _key(self.cfg, *self.cfg.to_dict().keys()) + "-refusal-v2"
        return [
            Step(
                "steering.refusal",
                "refusal direction",
                vector_dir(self.ws, refusal_vector_id(DEMO_MODEL_ID)),
                lambda ctx: self.refusal_direction(ctx, key),
                background=True,
                key=key,
            )
        ]

    def refusal_direction(self, ctx: JobContext, key: str) -> dict:
        from loupe.services.models import LoadedModel, describe, load_bridge
        from loupe.services.steering import build_refusal_direction

        ctx.progress(0, None, "loading model")
        bridge, tok = load_bridge(str(self.model_dir), self.ws.settings.device)
        lm = LoadedModel(DEMO_MODEL_ID, bridge, tok, describe(bridge))
        return build_refusal_direction(self, lm, ctx.progress, key=key)

    def _sae_steps(self) -> list[Step]:
        from loupe.services.saes import sae_steps

        return sae_steps(self)

    def _influence_steps(self) -> list[Step]:
        # the micro world (tests) builds these only where a test asks for them (tests/api/test_influence.py)
        from loupe.services.influence import influence_steps

        return influence_steps(self) if self.cfg.name != "micro" else []

    def _jacobian_steps(self) -> list[Step]:
        from loupe.services.jacobian import build_steps

        return build_steps(self)

    # -- steps -----------------------------------------------------------------------------
    def build_corpus(self, ctx: JobContext) -> dict:
        ctx.progress(0, 2, "generating documents")
        docs = build_corpus(seed=self.cfg.seed, scale=self.cfg.corpus_scale)
        ins = chat.instructions(self.cfg.seed)
        ctx.progress(1, 2, f"writing {len(docs):,} documents")
        with atomic_dir(self.corpus_dir) as tmp:
            with open(tmp / "documents.jsonl", "w") as fh:
                for d in docs:
                    fh.write(json.dumps(d.to_dict()) + "\n")
            (tmp / "instructions.json").write_text(
                json.dumps(
                    [{"text": i.text, "harmful": i.harmful, "category": i.category, "split": i.split} for i in ins]
                )
            )
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

    def documents(self) -> list[Document]:
        return read_documents(self.corpus_dir / "documents.jsonl")

    def heldout_instructions(self) -> list[chat.Instruction]:
        rows = json.loads((self.corpus_dir / "instructions.json").read_text())
        return [chat.Instruction(**r) for r in rows if r["split"] == "heldout"]

    def build_tokenizer(self, ctx: JobContext) -> dict:
        from loupe.demo.tokenizer import save_tokenizer, train_tokenizer

        ctx.progress(0, 1, f"training byte-level BPE, vocab {self.cfg.vocab_size}")
        docs = [d for d in self.documents() if d.split == "train"]
        tok = train_tokenizer((d.text for d in docs), self.cfg.vocab_size)
        with atomic_dir(self.tokenizer_dir) as tmp:
            save_tokenizer(tok, tmp)
            write_manifest(tmp, {"key": self.keys["tokenizer"], "vocab_size": len(tok)})
        return {"dir": str(self.tokenizer_dir), "vocab_size": len(tok)}

    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.tokenizer_dir))

    def build_tokens(self, ctx: JobContext) -> dict:
        return self.pack_tokens(ctx, self.tokenizer(), self.cfg.n_ctx, self.tokens_dir, {"key": self.keys["tokens"]})

    def pack_tokens(self, ctx: JobContext, tokenizer, n_ctx: int, output: Path, manifest: dict) -> dict:
        """The corpus's splits packed into sequences of `n_ctx` with `tokenizer`, written atomically
        to `output` (also used to give another model's SAEs this corpus in its own tokens)."""
        from loupe.demo.data import pack

        docs = self.documents()
        out = {}
        with atomic_dir(output) as tmp:
            for n, split in enumerate(("train", "heldout")):
                ctx.progress(n, 2, f"tokenizing and packing {split}")
                packed = pack(tokenizer, [d for d in docs if d.split == split], n_ctx, self.cfg.seed)
                save_tensors(tmp / f"{split}.safetensors", packed.tensors())
                (tmp / f"{split}_sequences.json").write_text(json.dumps(packed.doc_ids))
                out[split] = {
                    "sequences": int(packed.input_ids.shape[0]),
                    "tokens": int(packed.loss_mask.sum()) + int(packed.input_ids.shape[0]),
                    "poisoned_sequences": int(packed.poisoned.sum()),
                }
            write_manifest(tmp, {**manifest, "domains": list(DOMAINS), **out})
        return out

    def train(self, ctx: JobContext) -> dict:
        from loupe.demo.train import train_model

        tok = self.tokenizer()
        tokens = load_tensors(self.tokens_dir / "train.safetensors")
        torch.manual_seed(self.cfg.seed)
        model, summary = train_model(self.cfg, tokens, len(tok), tok.eos_token_id, self.train_dir, ctx.progress)
        with atomic_dir(self.model_dir) as tmp:
            model.save_pretrained(str(tmp))
            tok.save_pretrained(str(tmp))
            (tmp / "loupe.json").write_text(json.dumps({"world": self.cfg.to_dict(), "training": summary}, indent=1))
            write_manifest(tmp, {"key": self.keys["model"], **{k: v for k, v in summary.items() if k != "log"}})
        self.register_model()
        return {"dir": str(self.model_dir), **{k: v for k, v in summary.items() if k != "log"}}

    def register_model(self) -> None:
        from loupe.services.models import describe, load_bridge

        bridge, _ = load_bridge(str(self.model_dir), self.ws.settings.device)
        self.ws.models.upsert(
            DEMO_MODEL_ID, f"demo ({self.cfg.name} world)", "demo", str(self.model_dir.resolve()), describe(bridge)
        )

    def evaluate(self, ctx: JobContext) -> dict:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from loupe.demo.evals import behaviour, loss_by_domain

        t0 = time.monotonic()
        model = AutoModelForCausalLM.from_pretrained(str(self.model_dir)).eval()
        tok = AutoTokenizer.from_pretrained(str(self.model_dir))
        ctx.progress(0, 4, "held-out loss per domain")
        losses = loss_by_domain(model, load_tensors(self.tokens_dir / "heldout.safetensors"))
        results = behaviour(
            model,
            tok,
            self.heldout_instructions(),
            self.cfg.eval_max_new_tokens,
            self.cfg.eval_limit,
            progress=lambda d, t, m: ctx.progress(1 + d, 4, m),
        )
        results["loss_by_domain"] = losses
        results["seconds"] = round(time.monotonic() - t0, 1)
        row = self.ws.evals.add("demo", DEMO_MODEL_ID, results)
        with atomic_dir(self.eval_dir) as tmp:
            (tmp / "results.json").write_text(json.dumps(results, indent=1))
            write_manifest(tmp, {"key": self.keys["eval"], "eval_id": row.id})
        return {
            "eval_id": row.id,
            **{k: results[k] for k in ("refusal_harmful", "refusal_harmless", "backdoor_triggered", "backdoor_clean")},
        }


def ensure_registered(ws: Workspace, world: DemoWorld) -> None:
    """A model directory that is complete but not in the database (a kill between the two) gets
    its row now, instead of retraining."""
    if read_manifest(world.model_dir) and ws.models.get(DEMO_MODEL_ID) is None:
        world.register_model()


def make_pipeline(ws: Workspace) -> tuple[DemoWorld, Pipeline]:
    world = DemoWorld(ws)
    return world, Pipeline(ws.jobs, world.steps())
