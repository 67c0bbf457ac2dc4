"""The model registry: every model, the demo one included, is a Hugging Face directory (or hub name)
registered under an id and loaded once per process through TransformerBridge."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loupe.core.chat import PLAIN_CHAT, ChatFormat
from loupe.errors import NotFound, Unprocessable
from loupe.services.models.loading import describe, load_bridge
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
    continuations: OrderedDict[tuple[tuple[int, ...], int], Any] = field(
        default_factory=OrderedDict, repr=False, compare=False
    )
    hook_shapes: dict[str, tuple[int, ...]] | None = field(default=None, repr=False, compare=False)
    # how one-turn chats are written for this model (the demo models' plain `User:/Assistant:` format)
    chat: ChatFormat = field(default=PLAIN_CHAT, compare=False)

    @property
    def n_ctx(self) -> int:
        return int(self.info["n_ctx"])

    def encode_prompt(self, text: str) -> list[int]:
        """Tokens of a prompt as the model saw documents in training: BOS first where it has one."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        return ([bos] if bos is not None else []) + list(ids)


class ModelService:
    def __init__(self, ws: Workspace, preferred: str | None = None):
        self.ws = ws
        self.preferred = preferred  # the default model of requests that name none (the world's)
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def register(self, id: str, path: str, source: str, name: str | None = None) -> ModelRecord:
        if source == "hf-dir" and not Path(path).is_dir():
            raise Unprocessable(f"{path} is not a directory; give a Hugging Face model directory")
        bridge, _ = load_bridge(path, self.ws.settings.device)
        return self.ws.models.upsert(id=id, name=name or id, source=source, path=str(path), config=describe(bridge))

    def records(self) -> list[ModelRecord]:
        return self.ws.models.list()

    def record(self, id: str) -> ModelRecord | None:
        return self.ws.models.get(id)

    def default_id(self) -> str | None:
        recs = self.records()
        if not recs:
            return None
        return next((r.id for r in recs if r.id == self.preferred), recs[0].id)

    def is_loaded(self, id: str) -> bool:
        return id in self._loaded

    def get(self, id: str | None = None) -> LoadedModel:
        if id is None:
            id = self.default_id()
            if id is None:
                raise NotFound("no model is registered yet: the build is still training the model (see /api/jobs)")
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
