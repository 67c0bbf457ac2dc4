"""The dashboard pass's encoding: a cache's activations through an SAE into its nonzero codes, as
units of whole batches (loupe.jobs.fanout: in the job's thread, or on Ray actors that load the SAE
once), merged here in one sort; each unit also sends its features' top-k candidates, reduced to each
feature's top k (core.sae_dashboards.top_k_candidates: a total order, so the same k whatever the
units)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from loupe.core import sae_dashboards as D
from loupe.core.config import Progress
from loupe.jobs.fanout import LOCAL, Units, blocks
from loupe.services.activations import ActivationCache
from loupe.services.saes.training import load_sae
from loupe.storage.artifacts import load_tensors


@contextmanager
def sparse_topk(sae: Any) -> Iterator[None]:
    """While inside, a TopK SAE's encode returns sae-lens's sparse COO codes (its TopK activation
    with use_sparse_activations) instead of scattering k values per token into a dense
    [tokens, d_sae] matrix that would then be scanned for its nonzeros; other SAEs are untouched."""
    from sae_lens.saes.topk_sae import TopK

    act: Any = getattr(sae, "activation_fn", None)  # sae-lens is untyped: isinstance does not narrow
    switch = isinstance(act, TopK) and not act.use_sparse_activations
    if switch:
        act.use_sparse_activations = True
    try:
        # sae-lens builds the COO codes from topk's own indices, valid by construction: opt out of
        # the invariant checks explicitly (torch warns when they are off implicitly)
        with torch.sparse.check_sparse_tensor_invariants(enable=False):
            yield
    finally:
        if switch:
            act.use_sparse_activations = False


def nonzero_codes(c: Tensor) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """Dense codes as they are; sparse [b, d_sae] codes as (rows, features, values > 0) on the CPU."""
    if not c.is_sparse:
        return c.cpu()
    idx, v = c._indices().cpu(), c._values().cpu()  # uncoalesced: TopK writes each (row, feature) once
    keep = v > 0
    return idx[0][keep], idx[1][keep], v[keep]


@dataclass(frozen=True)
class EncodeWorker:
    """A worker factory of the dashboard pass's units: loads the SAE (from its directory) once, on
    whichever process runs it (loupe.jobs.fanout), and encodes ranges of the cache's shards."""

    sae_dir: str
    device: str
    cache_dir: str
    batch_size: int
    top_k: int

    def __call__(self) -> Callable[[tuple[int, int, int, int]], dict[str, Tensor]]:
        return _Encoder(load_sae(self.sae_dir, self.device), self.cache_dir, self.batch_size, self.top_k)


class _Encoder:
    """Encodes a unit (shard index, first row, stop row, the shard's first row in the pass): the
    nonzero codes of its batches and their top-k candidates (the reduce's input)."""

    def __init__(self, sae: Any, cache_dir: str | Path, batch_size: int, top_k: int):
        self.sae = sae
        self.cache = ActivationCache(Path(cache_dir))
        self.batch_size = batch_size
        self.top_k = top_k
        self._shard: tuple[int, Tensor] | None = None  # the last shard read (a worker's units are runs of one)

    def _acts(self, i: int) -> Tensor:
        if self._shard is None or self._shard[0] != i:
            f = self.cache.manifest["splits"]["train"]["shards"][i]["file"]
            self._shard = (i, load_tensors(self.cache.dir / f)["acts"])
        return self._shard[1]

    @torch.no_grad()
    def __call__(self, unit: tuple[int, int, int, int]) -> dict[str, Tensor]:
        shard, start, stop, offset = unit
        acts = self._acts(shard)
        with sparse_topk(self.sae):
            codes = D.encode_sparse(
                lambda x: nonzero_codes(self.sae.encode(x.to(self.sae.device))),
                (acts[s : min(s + self.batch_size, stop)].float() for s in range(start, stop, self.batch_size)),
                int(self.sae.cfg.d_sae),
            )
        rows = codes.rows + offset + start
        f, r, v = D.top_k_candidates(codes.features, rows, codes.values, self.top_k)
        return {"rows": rows, "features": codes.features, "values": codes.values, "top_f": f, "top_r": r, "top_v": v}


def encode_pass(
    sae: Any,
    cache: ActivationCache,
    n_total: int,
    batch_size: int,
    progress: Progress,
    top_k: int,
    units: Units = LOCAL,
    sae_dir: Path | None = None,
) -> tuple[D.SparseCodes, dict[str, Tensor], Tensor]:
    """The SAE's nonzero codes over the cache's first `n_total` train tokens, those tokens' seq, pos,
    domain and token columns, and each feature's top-k rows [d_sae, top_k]. The encoding runs as
    units of whole batches (`units`: in this thread, or on Ray actors, which load the SAE from
    `sae_dir`); their codes are merged here in one sort, their top-k candidates reduced to the top k."""
    meta_parts: dict[str, list[Tensor]] = {k: [] for k in ("seq", "pos", "domain", "token")}
    parts: list[tuple[int, int, int, int]] = []
    n = 0
    for i, shard in enumerate(cache.iter_shards("train", fields=list(meta_parts))):
        take = min(next(iter(shard.values())).shape[0], n_total - n)
        if take <= 0:
            break
        for k in meta_parts:
            meta_parts[k].append(shard[k][:take])
        size = units.size(take, batch_size)
        parts += [(i, a, b, n) for a, b in blocks(take, size, batch_size)]
        n += take
    d_sae = int(sae.cfg.d_sae)
    if units.distributed and sae_dir is not None:
        factory: Callable[[], Callable[[tuple[int, int, int, int]], dict[str, Tensor]]] = EncodeWorker(
            str(Path(sae_dir).resolve()), str(sae.device), str(cache.dir.resolve()), batch_size, top_k
        )
    else:
        factory = partial(_Encoder, sae, cache.dir, batch_size, top_k)
    got: dict[str, list[Tensor]] = {}
    for out, (_, _, stop, offset) in zip(units.map(factory, parts), parts):
        for k, v in out.items():
            got.setdefault(k, []).append(v)
        progress(offset + stop, n_total, f"encoding {offset + stop:,}/{n_total:,} tokens")

    def cat(k: str, dtype: torch.dtype) -> Tensor:
        return torch.cat(got[k]) if got.get(k) else torch.zeros(0, dtype=dtype)

    rows, feats, vals = cat("rows", torch.long), cat("features", torch.long), cat("values", torch.float32)
    o = D.sort_int64(feats * max(n, 1) + rows)
    codes = D.SparseCodes(rows[o], feats[o], vals[o], n, d_sae)
    top_rows, _ = D.top_k_table(
        cat("top_f", torch.long), cat("top_r", torch.long), cat("top_v", torch.float32), d_sae, top_k
    )
    return codes, {k: torch.cat(v) for k, v in meta_parts.items()}, top_rows
