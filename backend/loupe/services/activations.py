"""Cached activations: run a model over the packed token splits and write the activations of one
hook to sharded safetensors files with a manifest, atomically.

Only real positions are kept: the first position of a sequence and every position with
`loss_mask` (a token the model is trained to predict); padding is skipped. One cache is a directory:

    manifest.json              {"key", "hook_name", "d_in", "dtype", "shard_tokens", "domains",
                                "splits": {split: {"n_tokens", "n_sequences", "shards": [{"file", "n_tokens"}]}}, ...}
    train/00000.safetensors    acts [n, d_in] (stored dtype), seq int32 (row in the split's
                               token file), pos int16, domain int16 (index into DOMAINS), token int32
    heldout/00000.safetensors  the same for the held-out split

The whole directory is written to scratch and renamed into place with its manifest, so a reader
never sees a partial cache (`loupe.storage.artifacts.atomic_dir`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from loupe.core.activations import check_hook_names, iter_activations
from loupe.core.config import Config, Progress, no_progress
from loupe.jobs.fanout import LOCAL, Units, blocks
from loupe.services.models.loading import load_bridge
from loupe.storage.artifacts import atomic_dir, load_tensors, read_manifest, save_tensors, write_manifest

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ActivationCacheConfig(Config):
    hook_name: str
    max_train_tokens: int | None = None  # None: every train token; else whole sequences until reached
    max_heldout_tokens: int | None = None
    shard_tokens: int = 65_536  # tokens per shard file
    batch_size: int = 32  # sequences per forward pass
    dtype: str = "float32"  # stored dtype: float32, float16 or bfloat16
    # The first position of a context is an attention sink with massive activations in many real
    # models (Sun et al. 2024; SmolLM2-135M: a residual norm ~150x the others), which would dominate
    # an SAE's loss and FVU; Gemma Scope likewise trains without it (Lieberum et al. 2024).
    first_position: bool = True

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, not {self.dtype!r}")

    def max_tokens(self, split: str) -> int | None:
        return self.max_train_tokens if split == "train" else self.max_heldout_tokens


def real_positions(loss_mask: Tensor, first_position: bool = True) -> Tensor:
    """Bool [n_seq, n_ctx]: the first position (unless `first_position` is False) and every position
    with a token to predict."""
    real = loss_mask.bool().clone()
    real[:, 0] = first_position
    return real


def sequences_for(real: Tensor, max_tokens: int | None) -> int:
    """How many leading sequences to take so that their real tokens reach `max_tokens` (all if None)."""
    if max_tokens is None:
        return real.shape[0]
    cum = torch.cumsum(real.sum(1), 0)
    return min(real.shape[0], int(torch.searchsorted(cum, torch.tensor(max_tokens))) + 1)


class _ShardWriter:
    def __init__(self, directory: Path, shard_tokens: int):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shard_tokens = shard_tokens
        self.buf: dict[str, list[Tensor]] = {}
        self.n_buf = 0
        self.shards: list[dict[str, Any]] = []

    def add(self, rows: dict[str, Tensor]) -> None:
        for k, v in rows.items():
            self.buf.setdefault(k, []).append(v)
        self.n_buf += next(iter(rows.values())).shape[0]
        while self.n_buf >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def _flush(self, n: int) -> None:
        cat = {k: torch.cat(v) for k, v in self.buf.items()}
        name = f"{len(self.shards):05d}.safetensors"
        save_tensors(self.dir / name, {k: v[:n] for k, v in cat.items()})
        self.shards.append({"file": f"{self.dir.name}/{name}", "n_tokens": n})
        self.buf = {k: [v[n:]] for k, v in cat.items()}
        self.n_buf -= n

    def close(self) -> list[dict[str, Any]]:
        if self.n_buf:
            self._flush(self.n_buf)
        return self.shards


@torch.no_grad()
def activation_rows(
    model: Any,  # a TransformerBridge (hooks by hook name)
    t: dict[str, Tensor],  # one split's {"input_ids", "loss_mask", "domain_ids"}
    cfg: ActivationCacheConfig,
    start: int,
    stop: int,
) -> list[dict[str, Tensor]]:
    """The cached rows of sequences [start, stop), one dict per forward batch of `cfg.batch_size`
    (`start` a multiple of it, so the batches are those of one pass over the whole split)."""
    dtype = _DTYPES[cfg.dtype]
    real = real_positions(t["loss_mask"][start:stop], cfg.first_position)
    ids = t["input_ids"][start:stop]
    out = []
    for b0, cache in iter_activations(model, ids, [cfg.hook_name], cfg.batch_size):
        acts = cache[cfg.hook_name]
        b = acts.shape[0]
        r = real[b0 : b0 + b]
        seq, pos = torch.nonzero(r, as_tuple=True)
        a = acts[r.to(acts.device)].to("cpu", dtype)
        if not torch.isfinite(a).all():
            raise ValueError(f"activations of {cfg.hook_name} overflow {cfg.dtype}; cache them as float32")
        out.append(
            {
                "acts": a,
                "seq": (seq + start + b0).int(),
                "pos": pos.short(),
                "domain": t["domain_ids"][start + b0 : start + b0 + b][r].short(),
                "token": ids[b0 : b0 + b][r].int(),
            }
        )
    return out


@dataclass(frozen=True)
class CacheWorker:
    """A worker factory of the cache's units (split, start, stop): loads the model and the token
    files once, on whichever process runs it (loupe.jobs.fanout)."""

    model_dir: str
    device: str
    token_files: tuple[tuple[str, str], ...]  # (split, safetensors path)
    cfg: ActivationCacheConfig

    def __call__(self) -> Callable[[tuple[str, int, int]], list[dict[str, Tensor]]]:
        model = load_bridge(self.model_dir, self.device)[0]
        check_hook_names(model, [self.cfg.hook_name])
        tokens = {split: load_tensors(Path(f)) for split, f in self.token_files}
        return _InMemoryCache(model, tokens, self.cfg)


@dataclass(frozen=True)
class _InMemoryCache:
    model: Any
    tokens: dict[str, dict[str, Tensor]]
    cfg: ActivationCacheConfig

    def __call__(self, unit: tuple[str, int, int]) -> list[dict[str, Tensor]]:
        split, start, stop = unit
        return activation_rows(self.model, self.tokens[split], self.cfg, start, stop)


def write_activation_cache(
    model: Any,  # a TransformerBridge (hooks by hook name), or a CacheWorker that loads one where units run
    tokens: dict[str, dict[str, Tensor]],  # split -> {"input_ids", "loss_mask", "domain_ids"}
    cfg: ActivationCacheConfig,
    output: Path,
    key: str = "",
    progress: Progress = no_progress,
    meta: dict[str, Any] | None = None,
    units: Units = LOCAL,
) -> dict[str, Any]:
    """Cache `cfg.hook_name` over each split in `tokens`; returns the manifest written. The forward
    passes run as units of whole batches (`units`: in this thread, or on Ray actors, which need a
    CacheWorker); this process writes their rows, in order, into the same shards either way."""
    if isinstance(model, CacheWorker):
        factory: Callable[[], Callable[[tuple[str, int, int]], list[dict[str, Tensor]]]] = model
    else:
        check_hook_names(model, [cfg.hook_name])
        factory = partial(_InMemoryCache, model, tokens, cfg)
    plan = {}
    for split, t in tokens.items():
        real = real_positions(t["loss_mask"], cfg.first_position)
        plan[split] = sequences_for(real, cfg.max_tokens(split))
    total = sum(plan.values())
    before = 0  # sequences of the splits already written
    manifest: dict[str, Any] = {
        "key": key,
        "hook_name": cfg.hook_name,
        "dtype": cfg.dtype,
        "shard_tokens": cfg.shard_tokens,
        "config": cfg.to_dict(),
        "splits": {},
        **(meta or {}),
    }
    d_in = None
    with atomic_dir(Path(output)) as tmp:
        for split in tokens:
            n_seq = plan[split]
            writer = _ShardWriter(tmp / split, cfg.shard_tokens)
            parts = [(split, a, b) for a, b in blocks(n_seq, units.size(n_seq, cfg.batch_size), cfg.batch_size)]
            for rows, (_, _, stop) in zip(units.map(factory, parts), parts):
                for r in rows:
                    d_in = r["acts"].shape[-1]
                    writer.add(r)
                progress(before + stop, total, f"{split}: {stop:,}/{n_seq:,} sequences")
            before += n_seq
            shards = writer.close()
            manifest["splits"][split] = {
                "n_tokens": sum(s["n_tokens"] for s in shards),
                "n_sequences": n_seq,
                "shards": shards,
            }
        manifest["d_in"] = d_in
        write_manifest(tmp, manifest)
    return manifest


class ActivationCache:
    """Reads a cache written by `write_activation_cache`."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        m = read_manifest(self.dir)
        if m is None:
            raise FileNotFoundError(f"no activation cache at {self.dir} (no manifest)")
        self.manifest = m

    @property
    def hook_name(self) -> str:
        return str(self.manifest["hook_name"])

    @property
    def first_position(self) -> bool:
        """Whether the first position of each sequence was cached (older caches always did)."""
        return bool(self.manifest.get("config", {}).get("first_position", True))

    @property
    def d_in(self) -> int:
        return int(self.manifest["d_in"])

    def n_tokens(self, split: str) -> int:
        return int(self.manifest["splits"][split]["n_tokens"])

    def iter_shards(self, split: str, fields: Sequence[str] | None = None) -> Iterator[dict[str, Tensor]]:
        for s in self.manifest["splits"][split]["shards"]:
            t = load_tensors(self.dir / s["file"])
            yield t if fields is None else {k: t[k] for k in fields}

    def load(self, split: str, max_tokens: int | None = None, fields: Sequence[str] | None = None) -> dict[str, Tensor]:
        """The first `max_tokens` tokens of a split (all by default), shards concatenated; acts
        keep their stored dtype."""
        parts: dict[str, list[Tensor]] = {}
        n = 0
        for t in self.iter_shards(split, fields):
            for k, v in t.items():
                parts.setdefault(k, []).append(v)
            n += next(iter(t.values())).shape[0]
            if max_tokens is not None and n >= max_tokens:
                break
        out = {k: torch.cat(v) for k, v in parts.items()}
        return out if max_tokens is None else {k: v[:max_tokens] for k, v in out.items()}
