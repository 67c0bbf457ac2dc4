"""Steering vectors: directions stored as files (r, mu-, mu+ in safetensors) with a row each;
computed here, imported from a file, exported, listed and deleted.

    vectors/<vector_id>/vector.safetensors   r, mu_minus, mu_plus (float32) + manifest.json
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from loupe.errors import Conflict, NotFound, Unprocessable
from loupe.services.ids import ID_PATTERN, plain_text, slug
from loupe.services.models import ModelService
from loupe.services.steering.hooks import residual_layer
from loupe.services.workspace import Workspace
from loupe.storage.artifacts import atomic_dir, load_tensors, read_manifest, save_tensors, write_manifest
from loupe.storage.models import VectorRecord

log = logging.getLogger("loupe.vectors")


@dataclass
class Vector:
    id: str
    name: str
    model_id: str
    hook: str
    layer: int
    position: int | None
    r: Tensor
    mu_minus: Tensor
    mu_plus: Tensor


class VectorStore:
    """Every steering vector of the workspace: files first, then the row (a row never points at a
    missing file). Rows hold the file's path relative to the workspace, so a workspace can move.
    Loaded tensors are cached per id, dropped on save and delete, and checked against the file's
    identity on each load (another process may have replaced it)."""

    def __init__(self, ws: Workspace, models: ModelService):
        self.ws = ws
        self.models = models
        self._cache: dict[str, tuple[tuple[int, int, int], Vector]] = {}
        self._guard = threading.Lock()

    def dir(self, vector_id: str) -> Path:
        return self.ws.artifact("vectors", vector_id)

    def _stored_path(self, directory: Path) -> str:
        """The row's path: the vector file in `directory`, relative to the workspace."""
        return (directory / "vector.safetensors").relative_to(self.ws.settings.workspace).as_posix()

    def file(self, rec: VectorRecord) -> Path:
        """The vector's file: a row's relative path resolved in this workspace (absolute: as it is)."""
        p = Path(rec.path)
        return p if p.is_absolute() else self.ws.settings.workspace / p

    def _forget(self, vector_id: str) -> None:
        with self._guard:
            self._cache.pop(vector_id, None)

    def save(
        self,
        vector_id: str,
        name: str,
        model_id: str,
        hook: str,
        layer: int,
        position: int | None,
        r: Tensor,
        mu_minus: Tensor,
        mu_plus: Tensor,
        scores: dict[str, Any],
        candidates: dict[str, Any],
        source: str,
        key: str = "",
    ) -> VectorRecord:
        """Write the vector's file atomically, then its row (the row never points at a missing file)."""
        out = self.dir(vector_id)
        meta = {
            "id": vector_id,
            "name": name,
            "model_id": model_id,
            "hook": hook,
            "layer": str(layer),
            "position": "" if position is None else str(position),
        }
        with atomic_dir(out) as tmp:
            save_tensors(
                tmp / "vector.safetensors",
                {"r": r.float(), "mu_minus": mu_minus.float(), "mu_plus": mu_plus.float()},
                metadata=meta,
            )
            write_manifest(tmp, {"key": key, **meta, "source": source, "scores": scores, "candidates": candidates})
        self._forget(vector_id)
        try:
            return self.ws.vectors.upsert(
                vector_id,
                name=name,
                model_id=model_id,
                hook=hook,
                layer=int(layer),
                position=position,
                d_model=int(r.shape[-1]),
                source=source,
                path=self._stored_path(out),
                scores=scores,
                candidates=candidates,
            )
        finally:
            self._forget(vector_id)  # a load between the file and the row may have cached the old row's fields

    def save_direction(
        self, vector_id: str, name: str, model_id: str, res: dict[str, Any], source: str, key: str = ""
    ) -> VectorRecord:
        """Save what `compute_refusal_direction` selected (its hook, position, r, means, scores, candidates)."""
        return self.save(
            vector_id,
            name,
            model_id,
            res["hook"],
            res["layer"],
            res["position"],
            res["r"],
            res["mu_minus"],
            res["mu_plus"],
            res["scores"],
            res["candidates"],
            source,
            key=key,
        )

    def save_none(self, vector_id: str, outcome: dict[str, Any], key: str = "") -> None:
        """A computation that gave no direction to save (none passed, and none was kept): any earlier
        vector of this id goes (it would answer for a computation that no longer gives it), and the
        directory holds only a manifest with the outcome, so a build step with this key is done."""
        if self.ws.vectors.get(vector_id) is not None:
            self.ws.vectors.delete(vector_id)
        self._forget(vector_id)
        with atomic_dir(self.dir(vector_id)) as tmp:
            write_manifest(tmp, {"key": key, "id": vector_id, "saved": False, "outcome": outcome})

    def restore(self) -> int:
        """Rows for complete vector directories that have none (a database recreated beside kept
        artifacts, or a kill between the file and the row). Returns how many were added."""
        root = self.ws.artifact("vectors")
        n = 0
        for d in sorted(root.iterdir()) if root.exists() else []:
            try:
                n += self._restore_one(d)
            except Exception as exc:  # noqa: BLE001 - one unreadable directory must not stop the server
                log.warning("vector directory %s is not restored: %s: %s", d, type(exc).__name__, exc)
        return n

    def _restore_one(self, d: Path) -> int:
        m = read_manifest(d)
        if (
            not m
            or "id" not in m
            or self.ws.vectors.get(m["id"]) is not None
            or not (d / "vector.safetensors").exists()
        ):
            return 0
        r = load_tensors(d / "vector.safetensors")["r"]
        if not ID_PATTERN.match(str(m["id"])) or r.dim() != 1 or not bool(torch.isfinite(r).all()):
            raise ValueError("its id or its tensor r is not one a vector can have")
        self.ws.vectors.upsert(
            m["id"],
            name=plain_text(str(m.get("name", m["id"])), "name", 200),
            model_id=str(m.get("model_id", "demo")),
            hook=str(m["hook"]),
            layer=_bounded(int(m.get("layer", 0)), 0, MAX_LAYER),
            position=_position(m.get("position"), MAX_POSITION),
            d_model=int(r.shape[-1]),
            source=str(m.get("source", "build")),
            path=self._stored_path(d),
            scores=_dict(m.get("scores")),
            candidates=m.get("candidates") if isinstance(m.get("candidates"), dict) else {"rows": []},
        )
        return 1

    def load(self, vector_id: str) -> Vector:
        rec = self.ws.vectors.get(vector_id)
        if rec is None:
            known = ", ".join(v.id for v in self.ws.vectors.list()) or "none yet"
            raise NotFound(f"unknown vector {vector_id!r}; known vectors: {known}")
        path = self.file(rec)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise Conflict(
                f"the file of vector {vector_id!r} is missing ({path}); import or compute it again"
            ) from None
        # the file's identity: a replace (atomic_dir) gives it a new inode
        ident = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._guard:
            hit = self._cache.get(vector_id)
            if hit is not None and hit[0] == ident:
                return hit[1]
        try:
            t = load_tensors(path)
        except Exception as exc:  # noqa: BLE001 - an unreadable file is the row's state, not a bug
            raise Conflict(
                f"vector {vector_id!r} cannot be read from {path} ({type(exc).__name__}); delete it and "
                "compute or import it again"
            ) from None
        v = Vector(
            rec.id,
            rec.name,
            rec.model_id,
            rec.hook,
            rec.layer,
            rec.position,
            t["r"].double(),
            t["mu_minus"].double(),
            t["mu_plus"].double(),
        )
        with self._guard:
            self._cache[vector_id] = (ident, v)
        return v

    def import_file(
        self, data: bytes, name: str, model_id: str | None, hook: str | None, vector_id: str | None
    ) -> VectorRecord:
        """A safetensors file with `r` (and optionally `mu_minus`, `mu_plus`) of shape [d_model] -> a vector.
        The hook comes from the request or the file's metadata and must be a residual hook of the model."""
        if not data:
            raise Unprocessable("the request body is empty; send the safetensors file as the body")
        plain_text(name, "the vector's name", 200)
        try:
            tensors = st_load(data)
            with safe_open_bytes(data) as meta:
                file_meta = meta
        except Exception as exc:  # noqa: BLE001 - any parse failure is the client's file
            raise Unprocessable(f"the file is not a readable safetensors file ({type(exc).__name__})") from None
        if "r" not in tensors:
            raise Unprocessable(f"the file has no tensor named 'r' (it has: {', '.join(sorted(tensors)) or 'none'})")
        lm = self.models.get(model_id or file_meta.get("model_id") or None)
        d = int(lm.info["d_model"])
        r = tensors["r"]
        for k in ("r", "mu_minus", "mu_plus"):
            t = tensors.get(k)
            if t is not None and (t.dim() != 1 or t.shape[0] != d):
                raise Unprocessable(f"tensor {k!r} has shape {list(t.shape)}; the model's residual stream needs [{d}]")
            if t is not None and not torch.isfinite(t.float()).all():
                raise Unprocessable(f"tensor {k!r} has non-finite values")
        if not float(r.float().norm()) > 0:
            raise Unprocessable("tensor 'r' is zero; a direction needs a nonzero vector")
        hook = hook or file_meta.get("hook") or f"blocks.{int(lm.info['n_layers']) // 2}.hook_resid_pre"
        layer = residual_layer(lm, hook)
        zero = torch.zeros(d)
        mu_minus = tensors.get("mu_minus", zero)
        mu_plus = tensors.get("mu_plus", mu_minus.float() + r.float())
        vid = vector_id or f"{lm.id}-{slug(name)}"
        if not ID_PATTERN.match(vid):
            raise Unprocessable(f"vector id {vid!r}: use letters, digits, '-', '_' and '.' (at most 100)")
        position = _position(file_meta.get("position"), lm.n_ctx)
        return self.save(
            vid,
            name,
            lm.id,
            hook,
            layer,
            position,
            r.double(),
            mu_minus.double(),
            mu_plus.double(),
            {"imported": True},
            {"rows": []},
            "import",
        )

    def export(self, vector_id: str) -> bytes:
        v = self.load(vector_id)
        meta = {
            "id": v.id,
            "name": v.name,
            "model_id": v.model_id,
            "hook": v.hook,
            "layer": str(v.layer),
            "position": "" if v.position is None else str(v.position),
        }
        return st_save({"r": v.r.float(), "mu_minus": v.mu_minus.float(), "mu_plus": v.mu_plus.float()}, metadata=meta)

    def describe(self, rec: VectorRecord, detail: bool = False) -> dict[str, Any]:
        """The row as the API shows it; ValueError for a row no vector can have (so no response fails on it)."""
        for field in ("layer", "d_model"):
            _bounded(getattr(rec, field), 0, MAX_LAYER if field == "layer" else MAX_WIDTH)
        if rec.position is not None:
            _bounded(rec.position, -MAX_POSITION, MAX_POSITION)
        if not all(isinstance(getattr(rec, f), str) for f in ("id", "name", "model_id", "hook", "source")):
            raise ValueError("a text column is not text")
        scores = _dict(rec.scores)
        # passed: a computed direction passed Arditi et al.'s filters (None: imported, no selection);
        # vectors computed before `passed` was recorded said `fallback` instead
        passed = scores.get("passed", (not scores["fallback"]) if "fallback" in scores else None)
        out = {
            "id": rec.id,
            "name": rec.name,
            "model_id": rec.model_id,
            "hook": rec.hook,
            "layer": rec.layer,
            "position": rec.position,
            "d_model": rec.d_model,
            "source": rec.source,
            "scores": scores,
            "passed": passed,
            "reason": scores.get("reason"),
            "created_at": rec.created_at,
        }
        if detail:
            out["candidates"] = rec.candidates or {"rows": []}
        return out

    def list(self, model_id: str | None = None) -> list[dict[str, Any]]:
        """Every vector (of a model); a row that cannot be described (written by an older version, or
        by hand) is left out with a warning instead of failing the whole list."""
        out = []
        for rec in self.ws.vectors.list(model_id):
            try:
                out.append(self.describe(rec))
            except (TypeError, ValueError, AttributeError, KeyError) as exc:
                log.warning("vector row %r is left out of the list: %s", rec.id, exc)
        return out

    def get(self, vector_id: str) -> dict[str, Any]:
        rec = self.ws.vectors.get(vector_id)
        if rec is None:
            self.load(vector_id)  # raises NotFound with the known ids
            raise NotFound(f"unknown vector {vector_id!r}")
        try:
            return self.describe(rec, detail=True)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise Conflict(
                f"vector {vector_id!r} is stored damaged ({exc}); delete it and compute or import it again"
            ) from None

    def delete(self, vector_id: str) -> None:
        if not self.ws.vectors.delete(vector_id):
            raise NotFound(f"unknown vector {vector_id!r}")
        self._forget(vector_id)
        shutil.rmtree(self.dir(vector_id), ignore_errors=True)


# Bounds of what a stored vector can hold: a row beyond them was not written by this version.
MAX_LAYER = 10_000
MAX_WIDTH = 1 << 20
MAX_POSITION = 1_000_000


def _bounded(x: Any, lo: int, hi: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or not lo <= x <= hi:
        raise ValueError(f"{x!r} is not an integer in {lo}..{hi}")
    return x


def _dict(x: Any) -> dict[str, Any]:
    if x is None:
        return {}
    if not isinstance(x, dict):
        raise ValueError(f"expected a JSON object, got {type(x).__name__}")
    return x


def _position(raw: Any, n_ctx: int) -> int | None:
    """A file's `position` metadata (where the direction was read; negative: from the prompt's end):
    an integer within the model's context, else 422."""
    if raw in (None, ""):
        return None
    try:
        pos = int(str(raw).strip())
    except ValueError:
        raise Unprocessable(f"the file's position metadata {str(raw)[:40]!r} is not an integer") from None
    if not -n_ctx <= pos < n_ctx:
        raise Unprocessable(
            f"the file's position metadata {str(raw)[:40]} is outside the model's context "
            f"(-{n_ctx}..{n_ctx - 1}, negative from the prompt's end)"
        )
    return pos


class safe_open_bytes:
    """The metadata of a safetensors blob (the header's __metadata__)."""

    def __init__(self, data: bytes):
        n = struct.unpack("<Q", data[:8])[0]
        if n > len(data) - 8:
            raise ValueError("truncated header")
        header = json.loads(data[8 : 8 + n])
        meta = header.get("__metadata__") if isinstance(header, dict) else None
        if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
            raise ValueError("__metadata__ is not a map of strings")
        self.meta: dict[str, str] = meta or {}

    def __enter__(self) -> dict[str, str]:
        return self.meta

    def __exit__(self, *a: object) -> None:
        return None
