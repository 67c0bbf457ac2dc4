"""Model registry and loading: every model, the demo one included, goes through
TransformerBridge.boot_transformers on a Hugging Face directory (or hub name)."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loupe.errors import NotFound, Unprocessable
from loupe.services.workspace import Workspace
from loupe.storage.models import ModelRecord


@dataclass
class LoadedModel:
    id: str
    bridge: Any  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: Any  # transformers PreTrainedTokenizerBase
    info: dict[str, Any]
    # one forward at a time per model: hook contexts (model.hooks) are per module, not per thread
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    # unsteered greedy continuations by (prompt ids, tokens): live editing asks for the same one on every edit
    continuations: OrderedDict = field(default_factory=OrderedDict, repr=False, compare=False)

    @property
    def n_ctx(self) -> int:
        return int(self.info["n_ctx"])

    def encode_prompt(self, text: str) -> list[int]:
        """Tokens of a prompt as the model saw documents in training: BOS first where it has one."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        return ([bos] if bos is not None else []) + list(ids)


def load_bridge(path: str, device: str = "cpu"):
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    if Path(path).is_dir():
        # a local directory never needs the hub; keep any library from trying
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(path)
    bridge = TransformerBridge.boot_transformers(path, tokenizer=tokenizer, device=device)
    bridge.eval()
    return bridge, tokenizer


def describe(bridge) -> dict[str, Any]:
    c = bridge.cfg
    return {
        "n_layers": int(c.n_layers),
        "d_model": int(c.d_model),
        "d_mlp": int(c.d_mlp or 0),
        "n_heads": int(c.n_heads),
        "n_ctx": int(c.n_ctx),
        "d_vocab": int(c.d_vocab),
        "n_params": int(sum(p.numel() for p in bridge.original_model.parameters())),
        "hook_names": sorted(bridge.hook_dict),
    }


class ModelService:
    def __init__(self, ws: Workspace):
        self.ws = ws
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def register(self, id: str, path: str, source: str, name: str | None = None) -> ModelRecord:
        if source == "hf-dir" and not Path(path).is_dir():
            raise Unprocessable(f"{path} is not a directory; give a Hugging Face model directory")
        bridge, _ = load_bridge(path, self.ws.settings.device)
        return self.ws.models.upsert(id=id, name=name or id, source=source, path=str(path), config=describe(bridge))

    def records(self) -> list[ModelRecord]:
        return self.ws.models.list()

    def default_id(self) -> str | None:
        recs = self.records()
        if not recs:
            return None
        wanted = "external" if self.ws.settings.model else "demo"
        return next((r.id for r in recs if r.id == wanted), recs[0].id)

    def is_loaded(self, id: str) -> bool:
        return id in self._loaded

    def get(self, id: str | None = None) -> LoadedModel:
        if id is None:
            id = self.default_id()
            if id is None:
                raise NotFound("no model is registered yet: the build is still training the demo model (see /api/jobs)")
        with self._lock:
            if id in self._loaded:
                return self._loaded[id]
            rec = self.ws.models.get(id)
            if rec is None:
                known = ", ".join(r.id for r in self.records()) or "none"
                raise NotFound(f"unknown model {id!r}; registered models: {known}")
            bridge, tokenizer = load_bridge(rec.path, self.ws.settings.device)
            lm = LoadedModel(id=id, bridge=bridge, tokenizer=tokenizer, info={**rec.config, **describe(bridge)})
            self._loaded[id] = lm
            return lm
