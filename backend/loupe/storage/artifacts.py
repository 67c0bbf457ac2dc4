"""Artifact files: written to a temporary sibling and renamed into place, so a reader never
sees a half-written file or directory, whatever kills the writer.

Replacing a directory takes two renames (old aside to `.old-*`, new into place); a kill between
them leaves only the `.old-*` copy, which `clean_scratch` (run when a workspace opens) renames back."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

MANIFEST = "manifest.json"
_SCRATCH = re.compile(r"^\.(tmp|old)-(.*)-p(\d+)-[0-9a-f]{8}$")


def _scratch(parent: Path, kind: str, name: str) -> Path:
    """A scratch sibling named with the writer's pid, so that clean_scratch (run by every process
    that opens the workspace) leaves a live writer's scratch alone."""
    return parent / f".{kind}-{name}-p{os.getpid()}-{uuid.uuid4().hex[:8]}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a scratch directory; on success it replaces `final` in one rename."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _scratch(final.parent, "tmp", final.name)
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if final.exists():
            trash = _scratch(final.parent, "old", final.name)
            os.replace(final, trash)
            try:
                os.replace(tmp, final)
            except BaseException:
                os.replace(trash, final)  # put the old copy back: never neither
                raise
            _fsync_dir(final.parent)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _scratch(path.parent, "tmp", path.name)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _scratch(path.parent, "tmp", path.name)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    atomic_write_json(Path(directory) / MANIFEST, manifest)


def read_manifest(directory: Path) -> dict[str, Any] | None:
    p = Path(directory) / MANIFEST
    if not p.exists():
        return None
    return json.loads(p.read_text())


def clean_scratch(root: Path) -> int:
    """Recover from killed writers: an `.old-<name>-*` copy whose `<name>` is missing (the writer
    died between the two renames of a replace) is renamed back; every other `.tmp-*` / `.old-*`
    entry whose writer (the pid in its name) is no longer running is removed (names without a pid
    are from older versions). Returns how many entries were removed or restored."""
    n = 0
    root = Path(root)
    if not root.exists():
        return 0
    # newest first: if several replaces of one name died, the latest old copy is the one to restore
    olds = sorted(root.rglob(".old-*"), key=lambda p: p.stat().st_mtime if p.exists() else 0, reverse=True)
    for p in [*olds, *root.rglob(".tmp-*")]:
        m = _SCRATCH.match(p.name)
        if m and (int(m.group(3)) == os.getpid() or pid_alive(int(m.group(3)))):
            continue
        if not os.path.lexists(p):
            continue
        if m and m.group(1) == "old" and not os.path.lexists(p.parent / m.group(2)):
            os.replace(p, p.parent / m.group(2))
        else:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        n += 1
    return n


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (hex): the identity of an artifact's content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def fingerprint(*parts: Any) -> str:
    """A short stable key of JSON-able parts: a step's manifest records it, and an artifact whose
    recorded key differs from the one its inputs give now is stale."""
    return digest(list(parts))


def digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
