"""The model registry: every model, the demo one included, is a Hugging Face directory (or hub name)
registered under an id and loaded once per process through TransformerBridge."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from loupe.core.chat import PLAIN_CHAT, ChatFormat, format_from_template, validate_messages
from loupe.errors import NotFound, Unprocessable
from loupe.services.models.fairlock import FairRLock
from loupe.services.models.loading import describe, load_bridge, load_tokenizer
from loupe.services.workspace import Workspace
from loupe.storage.models import ModelRecord


def chat_format_of(tokenizer: Any) -> tuple[ChatFormat, str | None]:
    """(one-turn chat format, why it is not the template's) of a tokenizer: its chat template's, split
    around the instruction of one user message with the generation prompt (core.chat.format_from_template),
    where it has a template that writes one; else the plain `User: ...\\nAssistant:` format."""
    if not getattr(tokenizer, "chat_template", None):
        return PLAIN_CHAT, None

    def render(x: str) -> str:
        msgs = [{"role": "user", "content": x}]
        return str(tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))

    try:
        return format_from_template(render), None
    except (ValueError, TemplateError, TypeError, KeyError) as exc:
        return PLAIN_CHAT, f"the chat template gives no one-turn format ({exc}); using the plain format"


def render_chat(tokenizer: Any, chat: ChatFormat, messages: Sequence[Mapping[str, str]], model_id: str) -> str:
    """A conversation as the text a model continues: the tokenizer's chat template where it has one (with
    the assistant's generation prompt; a last assistant message is continued, a prefill), else the
    model's plain format (`chat`: one user message is `User: ...\nAssistant:`)."""
    problem = validate_messages(messages)
    if problem is not None:
        raise Unprocessable(problem)
    if not getattr(tokenizer, "chat_template", None):
        return chat.render(messages)
    prefill = messages[-1]["role"] == "assistant"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": m["role"], "content": m["content"]} for m in messages],
            tokenize=False,
            add_generation_prompt=not prefill,
            continue_final_message=prefill,
        )
    except (TemplateError, ValueError, TypeError, KeyError) as exc:
        raise Unprocessable(f"the chat template of model {model_id!r} refused these messages: {exc}") from exc
    return str(text)


@dataclass
class LoadedModel:
    id: str
    bridge: Any  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: Any  # transformers PreTrainedTokenizerBase
    info: dict[str, Any]
    # one forward at a time per model: hook contexts (model.hooks) are per module, not per thread; granted
    # in arrival order, so a flood of generate requests cannot starve another request (fairlock.py)
    lock: FairRLock = field(default_factory=FairRLock, repr=False, compare=False)
    # unsteered greedy continuations by (prompt ids, tokens): live editing asks for the same one on every edit
    continuations: OrderedDict[tuple[tuple[int, ...], int], Any] = field(
        default_factory=OrderedDict, repr=False, compare=False
    )
    hook_shapes: dict[str, tuple[int, ...]] | None = field(default=None, repr=False, compare=False)
    fired_hooks: tuple[str, ...] | None = field(default=None, repr=False, compare=False)
    _plain: Any = field(default=None, repr=False, compare=False)
    # how one-turn chats are written for this model: its chat template's, where it has one (see
    # __post_init__), else the demo models' plain `User:/Assistant:` format
    chat: ChatFormat = field(default=PLAIN_CHAT, compare=False)
    # why a model with a template still has the plain format (a template that does not write one user
    # message as text + instruction + text), or None
    chat_problem: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.chat is PLAIN_CHAT:
            self.chat, self.chat_problem = chat_format_of(self.tokenizer)

    @property
    def n_ctx(self) -> int:
        return int(self.info["n_ctx"])

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def encode_prompt(self, text: str) -> list[int]:
        """Tokens of a prompt as the model saw documents in training: BOS first where it has one, never
        twice (a chat template may write it: SmolLM2's BOS is `<|im_start|>`). Special tokens written in
        the text become their ids, as `apply_chat_template(tokenize=True)` encodes the rendered chat
        (`add_special_tokens=False`, `split_special_tokens=False`)."""
        ids = list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=False)["input_ids"])
        bos = self.tokenizer.bos_token_id
        if bos is None or (ids and ids[0] == bos):
            return ids
        return [bos, *ids]

    def render_messages(self, messages: Sequence[Mapping[str, str]]) -> str:
        """A conversation as the text the model continues (`render_chat` with this model's tokenizer)."""
        return render_chat(self.tokenizer, self.chat, messages, self.id)

    def prompt_ids(
        self, prompt: str | None = None, messages: Sequence[Mapping[str, str]] | None = None
    ) -> tuple[str, list[int]]:
        """(the text the model reads, its tokens) of a raw `prompt` or of chat `messages`, exactly one."""
        if (prompt is None) == (messages is None):
            raise Unprocessable('give exactly one of "prompt" (raw text) and "messages" (a chat)')
        text = prompt if prompt is not None else self.render_messages(messages or [])
        return text, self.encode_prompt(text)

    def plain_module(self) -> Any | None:
        """The model as a plain Hugging Face module sharing the bridge's weight tensors (no copy), for
        decoding with a KV cache: the bridge's own modules do not carry `past_key_values` through
        (TransformerLens 3.9: on SmolLM2 every token after the first is wrong). None where the
        bridge's weights do not map onto the plain class."""
        if self._plain is None:
            self._plain = _plain_module(self.bridge.original_model) or False
        return self._plain or None

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return [self.tokenizer.decode([t]) for t in ids]


def _plain_module(wrapped: Any) -> Any | None:
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    # the bridge turns on output_attentions in the model's config (for its attention hooks); the plain
    # module computes no attention maps, and generates as the saved model's generation config says
    config = copy.deepcopy(wrapped.config)
    config.output_attentions = False
    plain = AutoModelForCausalLM.from_config(config, dtype=next(wrapped.parameters()).dtype)
    plain.generation_config = copy.deepcopy(wrapped.generation_config)
    want = plain.state_dict()
    shared: dict[str, Any] = {}
    for key, tensor in wrapped.state_dict(keep_vars=True).items():
        name = key.replace("._original_component", "")  # the bridge wraps each HF module once
        if name in want and name not in shared and tensor.shape == want[name].shape:
            shared[name] = tensor
    tied = bool(getattr(wrapped.config, "tie_word_embeddings", False))
    missing = set(want) - set(shared) - ({"lm_head.weight"} if tied else set())
    if missing:
        return None
    with torch.no_grad():
        plain.load_state_dict(shared, strict=False, assign=True)
    if tied:
        plain.tie_weights()
    return plain.eval()


class ModelService:
    def __init__(self, ws: Workspace, preferred: str | None = None):
        self.ws = ws
        self.preferred = preferred  # the default model of requests that name none (the world's)
        self._loaded: dict[str, LoadedModel] = {}
        self._formats: dict[str, ChatFormat] = {}
        self._lock = threading.Lock()

    def register(
        self, id: str, path: str, source: str, name: str | None = None, lineage: dict[str, Any] | None = None
    ) -> ModelRecord:
        """Register (or replace) model `id` from a Hugging Face directory; `lineage`: what it was made
        from (a fine-tune's parent, dataset and settings), kept with its description."""
        if source == "hf-dir" and not Path(path).is_dir():
            raise Unprocessable(f"{path} is not a directory; give a Hugging Face model directory")
        bridge, _ = load_bridge(path, self.ws.settings.device)
        with self._lock:
            self._formats.pop(id, None)
            self._loaded.pop(id, None)  # a replaced model is loaded afresh
        config = describe(bridge) | ({"lineage": lineage} if lineage else {})
        # a directory inside the workspace is stored relative to it, so a moved workspace keeps its models
        ws = self.ws.settings.workspace.resolve()
        p = Path(path).resolve() if Path(path).exists() else None
        stored = p.relative_to(ws).as_posix() if p is not None and p.is_relative_to(ws) else str(path)
        return self.ws.models.upsert(id=id, name=name or id, source=source, path=stored, config=config)

    def path(self, rec: ModelRecord) -> str:
        """Where a model's files are: a workspace-relative path resolved in this workspace; an absolute one
        that is gone but names a directory under `artifacts/` that this workspace has (a row written before
        paths were relative, in a workspace that has moved since) there; else as stored (a directory or a
        hub name)."""
        p, ws = Path(rec.path), self.ws.settings.workspace
        if not p.is_absolute():
            return str(ws / p) if (ws / p).exists() else rec.path
        if not p.exists() and "artifacts" in p.parts:
            tail = p.parts[max(i for i, part in enumerate(p.parts) if part == "artifacts") :]
            if ws.joinpath(*tail).exists():
                return str(ws.joinpath(*tail))
        return rec.path

    def records(self) -> list[ModelRecord]:
        return self.ws.models.list()

    def record(self, id: str) -> ModelRecord | None:
        return self.ws.models.get(id)

    def default_id(self) -> str | None:
        recs = self.records()
        if not recs:
            return None
        return next((r.id for r in recs if r.id == self.preferred), recs[0].id)

    def chat_format(self, id: str) -> ChatFormat:
        """A registered model's one-turn chat format, from its tokenizer alone (its weights stay unloaded)."""
        with self._lock:
            if id in self._loaded:
                return self._loaded[id].chat
            if id in self._formats:
                return self._formats[id]
        rec = self.ws.models.get(id)
        if rec is None:
            raise NotFound(f"unknown model {id!r}")
        fmt, _ = chat_format_of(load_tokenizer(self.path(rec)))
        with self._lock:
            self._formats[id] = fmt
        return fmt

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
            bridge, tokenizer = load_bridge(self.path(rec), self.ws.settings.device)
            lm = LoadedModel(id=id, bridge=bridge, tokenizer=tokenizer, info={**rec.config, **describe(bridge)})
            self._loaded[id] = lm
            return lm
