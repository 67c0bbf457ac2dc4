"""Forward passes on a shared loaded model: hooks attached for exactly one forward, under the model's lock.

Hooks live on the model's modules, so a forward with hooks attached must not overlap any other
forward: every forward on a LoadedModel goes through `locked_forward` (or holds `lm.lock`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from loupe.core import steering as S
from loupe.core.generation import KVForward
from loupe.services.models.registry import LoadedModel

# The context level our per-forward hooks are added at, so removing them never touches another level's.
_REQUEST_HOOK_LEVEL = 1_000_003


def locked_forward(lm: LoadedModel, plan: S.HookPlan | None = None) -> Callable[[Tensor], Tensor]:
    """tokens -> logits with `plan`'s hooks attached for exactly this forward pass, under the model's lock.

    The hook points are resolved once per request and the hooks added and removed with TransformerLens's
    HookPoint.add_hook / remove_hooks for each forward: `bridge.hooks(...)` rebuilds the hook registry and
    its alias map on every entry, 1.1 ms per forward on the demo model (a third of a decoding step)."""
    bridge, lock = lm.bridge, lm.lock
    points = [(bridge.hook_dict[name], fn) for name, fn in plan] if plan else []

    def forward(ids: Tensor) -> Tensor:
        with lock, torch.no_grad():
            if not points:
                logits: Tensor = bridge(ids)
                return logits
            try:
                for hp, fn in points:
                    hp.add_hook(fn, dir="fwd", level=_REQUEST_HOOK_LEVEL)
                logits = bridge(ids)
                return logits
            finally:
                for hp, _ in points:
                    hp.remove_hooks("fwd", level=_REQUEST_HOOK_LEVEL)

    return forward


def decoding_forward(lm: LoadedModel, plan: S.HookPlan | None = None) -> Callable[[Tensor], Tensor]:
    """The forward to decode with: without hooks, the plain module with a KV cache (each step feeds one
    token); with a hook plan, `locked_forward` over the whole prefix (exact for any plan)."""
    plain = lm.plain_module() if not plan else None
    if plain is None:
        return locked_forward(lm, plan)

    def step(new: Tensor, cache: object) -> tuple[Tensor, object]:
        with lm.lock, torch.no_grad():
            out = plain(input_ids=new, past_key_values=cache, use_cache=True)
        return out.logits, out.past_key_values

    return KVForward(step)


def attached_hooks(bridge: Any) -> int:
    """How many forward hooks are attached to the model's hook points right now (0 between requests)."""
    return sum(len(getattr(hp, "fwd_hooks", ())) for hp in bridge.hook_dict.values())


def hook_shapes(lm: LoadedModel) -> dict[str, tuple[int, ...]]:
    """Shape of every hook's activation (without batch and position) from a one-token forward."""
    if lm.hook_shapes is None:
        ids = torch.tensor([[lm.tokenizer.bos_token_id or 0]])
        with lm.lock, torch.no_grad():
            _, cache = lm.bridge.run_with_cache(ids)
        lm.fired_hooks = tuple(cache.keys())
        lm.hook_shapes = {k: tuple(v.shape[2:]) for k, v in cache.items() if v.dim() >= 3 and v.shape[:2] == (1, 1)}
    return lm.hook_shapes


def fired_hooks(lm: LoadedModel) -> tuple[str, ...]:
    """Every hook a forward pass fills, whatever its shape, in the order it fills them (hooks switched
    off, or of activations the architecture lacks, are not among them)."""
    hook_shapes(lm)
    assert lm.fired_hooks is not None
    return lm.fired_hooks
