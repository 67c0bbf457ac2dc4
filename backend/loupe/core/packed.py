"""2-bit packed vectors and their inner products with a query: the influence gradient cache.

Each training sequence's whitened EK-FAC eigen-coordinates w (see `loupe.core.influence`) are kept
whole, at 2 bits per coordinate, instead of a projection to fewer float coordinates. On the demo
model, against exact EK-FAC over 3,000 training sequences and six queries (bench/RESULTS.md), the
Spearman correlation was 0.58 for the 16,384 coordinates of largest energy in float16, 0.63 for a
2,048-dimensional PCA basis, 0.89 for 131,072 coordinates in float16, and 0.96 for all 395,136
coordinates at 2 bits: a projection's error falls as 1/sqrt(kept dimensions) while the scores here
are small correlations spread over every coordinate, so rounding every coordinate coarsely loses
far less than dropping most of them.

Quantiser (Max 1960, "Quantizing for minimum distortion"; Lloyd 1982): per block of BLOCK
coordinates with RMS sigma, z = w / sigma is coded by the 2-bit Lloyd-Max quantiser of N(0, 1),
levels +-0.4528 and +-1.510 with thresholds 0 and +-0.9816 (mean squared error 0.1175 for Gaussian
z), and the block's scale is then refitted by least squares for its codes. The level of code bits
(h, l) is A(2h - 1) + B(2l - 1) with A = 0.9816, B = 0.5288: a sum of two sign vectors, so an inner
product with a query is two masked sums per block.

The query is rounded to integers in [-7, 7] per block (scale absmax / 7) and stored as the four bit
planes of q + 7, so a masked sum is sum_p 2^p popcount(U_p & h) - 7 popcount(h). Scores over all
rows are a popcount loop written with numba: torch and numpy have no packed-bit inner product, and
a numpy popcount over temporaries was ten times slower than this loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import torch
from numba import njit, prange, types
from numba.extending import intrinsic
from numpy.typing import NDArray
from torch import Tensor

BLOCK = 128  # coordinates per scale (2 words of 64 bits per plane)
THRESHOLD = 0.9816  # Lloyd-Max 2-bit quantiser of N(0, 1): decision level
LEVEL_A, LEVEL_B = 0.9816, 0.5288  # levels A +- B = 1.5104, 0.4528
QUERY_LEVELS = 7  # query integers in [-7, 7]: four bit planes of q + 7
LLOYD_MSE = 0.1175  # the quantiser's distortion for N(0, 1) (Max 1960, table I)
# numba's default (workqueue) threading layer aborts the process when two threads launch parallel
# kernels at once; API queries and an evaluation can run side by side
_KERNEL_LOCK = threading.Lock()


@dataclass
class PackedRows:
    """Rows of 2-bit codes: h, l [n, D/64] uint64 bit planes, scale [n, D/BLOCK] float32; `dim` is
    the unpadded length."""

    h: NDArray[np.uint64]
    l: NDArray[np.uint64]
    scale: NDArray[np.float32]
    dim: int

    @property
    def n(self) -> int:
        return int(self.h.shape[0])


@dataclass
class PackedQuery:
    planes: NDArray[np.uint64]  # [4, D/64]: bit planes of q_int + 7
    a: NDArray[np.float32]  # [D/BLOCK]: 2 A s_b
    b: NDArray[np.float32]  # [D/BLOCK]: 2 B s_b
    c: NDArray[np.float32]  # [D/BLOCK]: (A + B) sum of the block's rounded query
    dim: int


def _pad(x: Tensor) -> Tensor:
    return torch.nn.functional.pad(x, (0, (-x.shape[-1]) % BLOCK))


def _pack_bits(bits: Tensor) -> NDArray[np.uint64]:
    """[n, D] bool (D a multiple of 64) -> [n, D/64] uint64. Any fixed bit order works: only popcounts
    of ANDs of planes packed the same way are ever taken."""
    b = np.packbits(bits.numpy(), axis=1, bitorder="little")
    return np.ascontiguousarray(b).view(np.uint64)


def _unpack_bits(words: NDArray[np.uint64], dim: int) -> Tensor:
    return torch.from_numpy(np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")[:, :dim].astype(bool))


def pack_rows(w: Tensor) -> PackedRows:
    """Quantise rows w [n, D] to 2 bits per coordinate (see the module docstring)."""
    n, dim = w.shape
    x = _pad(w.float()).reshape(n, -1, BLOCK)
    rms = x.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-30)
    z = x / rms
    h = z >= 0
    l = h == (z.abs() >= THRESHOLD)
    level = LEVEL_A * (2 * h.float() - 1) + LEVEL_B * (2 * l.float() - 1)
    scale = (x * level).sum(-1) / (level * level).sum(-1)  # least squares for these codes
    return PackedRows(
        _pack_bits(h.reshape(n, -1)),
        _pack_bits(l.reshape(n, -1)),
        np.ascontiguousarray(scale.numpy(), dtype=np.float32),
        dim,
    )


def unpack_rows(p: PackedRows) -> Tensor:
    """The values the codes stand for, [n, dim] float32 (the reference the popcount loop must equal)."""
    padded = p.scale.shape[1] * BLOCK
    h, l = (_unpack_bits(x, padded).float() for x in (p.h, p.l))
    level = (LEVEL_A * (2 * h - 1) + LEVEL_B * (2 * l - 1)).reshape(p.n, -1, BLOCK)
    return (level * torch.from_numpy(p.scale)[..., None]).reshape(p.n, -1)[:, : p.dim]


def pack_query(q: Tensor) -> PackedQuery:
    dim = q.shape[-1]
    x = _pad(q.float()[None])[0].reshape(-1, BLOCK)
    s = x.abs().amax(-1).clamp_min(1e-30) / QUERY_LEVELS
    qi = torch.round(x / s[:, None]).clamp(-QUERY_LEVELS, QUERY_LEVELS).to(torch.int64)
    u = (qi + QUERY_LEVELS).reshape(1, -1)
    planes = np.concatenate([_pack_bits(((u >> p) & 1).bool()) for p in range(4)])
    return PackedQuery(
        planes,
        (2 * LEVEL_A * s).numpy().astype(np.float32),
        (2 * LEVEL_B * s).numpy().astype(np.float32),
        ((LEVEL_A + LEVEL_B) * s * qi.sum(-1)).numpy().astype(np.float32),
        dim,
    )


def unpack_query(pq: PackedQuery) -> Tensor:
    """The rounded query [dim] float32."""
    padded = pq.a.shape[0] * BLOCK
    bits = _unpack_bits(pq.planes, padded).long()
    qi = bits[0] + (bits[1] << 1) + (bits[2] << 2) + (bits[3] << 3) - QUERY_LEVELS
    s = torch.from_numpy(pq.a / (2 * LEVEL_A))
    return (qi.reshape(-1, BLOCK).float() * s[:, None]).reshape(-1)[: pq.dim]


@intrinsic
def _popcount_intrinsic(typingctx: Any, x: Any) -> tuple[Any, Callable[..., Any]]:
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


# numba's stub types an intrinsic's call as its typing function's, (typingctx, x) -> Never; compiled
# code calls it as popcount(x) -> uint64
_popcount: Callable[[np.uint64], np.uint64] = _popcount_intrinsic  # type: ignore[assignment]


@njit(parallel=True, fastmath=True, cache=True)
def _scores(  # pragma: no cover - compiled
    h: NDArray[np.uint64],
    l: NDArray[np.uint64],
    scale: NDArray[np.float32],
    rows: NDArray[np.int64],
    planes: NDArray[np.uint64],
    qa: NDArray[np.float32],
    qb: NDArray[np.float32],
    qc: NDArray[np.float32],
    out: NDArray[np.float32],
) -> None:
    nw = h.shape[1]
    nb = scale.shape[1]
    wpb = nw // nb
    u0, u1, u2, u3 = planes[0], planes[1], planes[2], planes[3]
    for i in prange(rows.shape[0]):
        r = rows[i]
        hr, lr, sr = h[r], l[r], scale[r]
        ch = np.empty(nw, np.int32)
        cl = np.empty(nw, np.int32)
        # masked sums of the integer query per word; a flat loop over words, so LLVM vectorises it
        for w in range(nw):
            x = hr[w]
            y = lr[w]
            ch[w] = np.int32(
                8 * _popcount(u3[w] & x) + 4 * _popcount(u2[w] & x) + 2 * _popcount(u1[w] & x) + _popcount(u0[w] & x)
            ) - np.int32(7 * _popcount(x))
            cl[w] = np.int32(
                8 * _popcount(u3[w] & y) + 4 * _popcount(u2[w] & y) + 2 * _popcount(u1[w] & y) + _popcount(u0[w] & y)
            ) - np.int32(7 * _popcount(y))
        acc = np.float32(0.0)
        for b in range(nb):
            ph = np.int32(0)
            pl = np.int32(0)
            for k in range(wpb):
                ph += ch[b * wpb + k]
                pl += cl[b * wpb + k]
            acc += sr[b] * (qa[b] * np.float32(ph) + qb[b] * np.float32(pl) - qc[b])
        out[i] = acc


def scores(p: PackedRows, q: PackedQuery, rows: Tensor | NDArray[np.integer[Any]] | None = None) -> Tensor:
    """<unpack_rows(p)[rows], unpack_query(q)> for every row (all rows when `rows` is None): [len(rows)]."""
    if q.dim != p.dim:
        raise ValueError(f"query has {q.dim} coordinates, rows have {p.dim}")
    idx = np.arange(p.n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    out = np.empty(idx.shape[0], np.float32)
    with _KERNEL_LOCK:
        # NUMBA_NUM_THREADS is set at import by numba.config's environment reader, which mypy cannot see
        n_max: int = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
        numba.set_num_threads(max(1, min(torch.get_num_threads(), n_max)))
        _scores(p.h, p.l, p.scale, idx, q.planes, q.a, q.b, q.c, out)
    return torch.from_numpy(out)


def concat(parts: list[PackedRows]) -> PackedRows:
    return PackedRows(
        np.concatenate([p.h for p in parts]),
        np.concatenate([p.l for p in parts]),
        np.concatenate([p.scale for p in parts]),
        parts[0].dim,
    )


def to_tensors(p: PackedRows) -> dict[str, Tensor]:
    """For safetensors (no unsigned 64-bit type in torch's file path): the planes as int64 views."""
    return {
        "h": torch.from_numpy(p.h.view(np.int64)),
        "l": torch.from_numpy(p.l.view(np.int64)),
        "scale": torch.from_numpy(p.scale),
    }


def from_tensors(t: dict[str, Tensor], dim: int) -> PackedRows:
    return PackedRows(
        np.ascontiguousarray(t["h"].numpy()).view(np.uint64),
        np.ascontiguousarray(t["l"].numpy()).view(np.uint64),
        np.ascontiguousarray(t["scale"].numpy()),
        dim,
    )
