"""Importing a GGUF file (llama.cpp's format): transformers reads it (dequantizing every tensor), and
the weights are saved in float32 as a safetensors Hugging Face directory in the workspace, which is
then registered like any other model directory."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loupe.errors import NotFound, Unprocessable
from loupe.services.ids import ID_PATTERN, ID_RULE
from loupe.storage.artifacts import atomic_dir, write_manifest

if TYPE_CHECKING:
    from loupe.services.models.registry import ModelService
    from loupe.storage.models import ModelRecord

GGUF_MAGIC = b"GGUF"


def file_sha256(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_gguf_file(file: Path) -> None:
    """NotFound for a missing file, Unprocessable for one that is not GGUF."""
    if not file.exists():
        raise NotFound(f"{file} does not exist; give the path of a .gguf file")
    if not file.is_file():
        raise Unprocessable(f"{file} is not a file; give the path of a .gguf file")
    with open(file, "rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise Unprocessable(f"{file} is not a GGUF file (it does not start with the bytes 'GGUF')")


def _architecture(file: Path) -> str:
    import gguf  # deferred: only an import needs it

    try:
        reader = gguf.GGUFReader(str(file))
        field = reader.get_field("general.architecture")
        arch = field.contents() if field is not None else None
    except Exception as exc:  # noqa: BLE001 - a file gguf cannot parse is the person's to fix
        raise Unprocessable(f"{file} is not a readable GGUF file: {exc}") from exc
    if not isinstance(arch, str):
        raise Unprocessable(f"{file} names no architecture (general.architecture is missing)")
    return arch


def load_gguf(file: Path) -> tuple[Any, Any]:
    """(float32 PreTrainedModel with no quantization config, tokenizer) of a GGUF file."""
    import torch  # deferred: only an import needs it
    from transformers import AutoModelForCausalLM, AutoTokenizer

    arch = _architecture(file)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        model = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise Unprocessable(
            f"transformers cannot load GGUF architecture {arch!r} from {file.name} as a causal LM: {exc}"
        ) from exc
    # A model loaded from GGUF keeps a GGUF quantization config and save_pretrained refuses it
    # ("quantized with gguf"); its tensors are already dequantized, so a fresh model of the same
    # class built from the cleaned config takes them as they are.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    fresh = type(model)(config).float()
    fresh.load_state_dict({k: v.to(torch.float32) for k, v in model.state_dict().items()})
    fresh.eval()
    return fresh, tokenizer


def import_gguf(models: ModelService, file: str | Path, id: str, name: str | None = None) -> ModelRecord:
    """Dequantize a GGUF file into the workspace (`artifacts/models/<id>`) and register it under `id`."""
    file = Path(file).expanduser().resolve()
    if not ID_PATTERN.match(id):
        raise Unprocessable(f"invalid model id {id!r}: {ID_RULE}")
    if models.record(id) is not None:
        raise Unprocessable(f"model id {id!r} is already taken; choose another --id")
    check_gguf_file(file)
    model, tokenizer = load_gguf(file)
    final = models.ws.artifact("models", id)
    with atomic_dir(final) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_manifest(
            tmp,
            {
                "kind": "model",
                "id": id,
                "source": "gguf",
                "source_file": str(file),
                "source_sha256": file_sha256(file),
                "source_bytes": file.stat().st_size,
                "conversion": "dequantized from GGUF",
                "dtype": "float32",
                "architecture": type(model).__name__,
            },
        )
    try:
        return models.register(id, str(final), "gguf", name=name or id)
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
