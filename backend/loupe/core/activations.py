"""Activations of a hooked model at named hook points, caching only the hooks asked for and
stopping the forward pass as soon as the last of them has fired.

Works with any model that has TransformerLens hook points: `TransformerBridge` (what Loupe loads),
`HookedTransformer`, or any `HookedRootModule`. It needs only `model.hook_dict`,
`model.hooks(fwd_hooks=...)` and `model(input_ids)`.

Why a private exception rather than the bridge's `stop_at_layer`: `stop_at_layer=L` stops at the
*start* of block L, so caching `blocks.0.mlp.hook_post` with it still runs the rest of block 0,
and a hook outside the blocks (`ln_final.hook_normalized`) cannot use it at all. Raising from the
hook of the last needed activation stops exactly there, for any hook name, and leaves nothing
behind: the hooks are removed by the `model.hooks` context, and an exception raised mid-forward
leaves no state in the bridge (its KV cache is only stored after a forward completes).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import torch
from torch import Tensor

_LAYER = re.compile(r"^blocks\.(\d+)\.")

Hook = Callable[..., Any]


class HookedModel(Protocol):
    """What this module uses of a TransformerLens-style model (the signature of ``hooks`` is
    HookedRootModule's)."""

    @property
    def hook_dict(self) -> Mapping[str, Any]: ...

    def hooks(self, fwd_hooks: list[tuple[str | Hook, Hook]]) -> AbstractContextManager[Any]: ...

    def __call__(self, input: Tensor, /) -> Any: ...


class _StopForward(Exception):
    """Raised from the hook of the last activation a caller needs; caught by `cache_activations`."""


def hook_layer(hook_name: str) -> int | None:
    """The block index of a hook name (`blocks.3.mlp.hook_post` -> 3), None outside the blocks."""
    m = _LAYER.match(hook_name)
    return int(m.group(1)) if m else None


def check_hook_names(model: HookedModel, hook_names: Sequence[str]) -> list[str]:
    """Deduplicated hook names, each one the model has; a KeyError naming the unknown ones otherwise.

    (`model.hooks` silently ignores a name it does not know, so this check is not optional.)"""
    names = list(dict.fromkeys(hook_names))
    if not names:
        raise ValueError("no hook names given")
    missing = [n for n in names if n not in model.hook_dict]
    if missing:
        raise KeyError(f"unknown hook name(s) {missing}; e.g. blocks.0.mlp.hook_post, blocks.0.hook_resid_pre")
    return names


def _first_tensor(x: Tensor | tuple[Tensor, ...]) -> Tensor:
    return x[0] if isinstance(x, tuple) else x


@torch.no_grad()
def cache_activations(
    model: HookedModel,
    input_ids: Tensor,  # Int[Tensor, "batch pos"]
    hook_names: Sequence[str],
    stop_early: bool = True,
) -> dict[str, Tensor]:
    """Run `model` on `input_ids` and return {hook_name: activation} for exactly `hook_names`
    (each [batch, pos, ...], detached, on the model's device).

    With `stop_early` the forward pass is abandoned as soon as every requested hook has fired,
    so layers after the last needed one never run."""
    names = check_hook_names(model, hook_names)
    cache: dict[str, Tensor] = {}

    def make_hook(name: str) -> Hook:
        def hook(x: Tensor | tuple[Tensor, ...], hook: Any = None) -> Tensor | tuple[Tensor, ...]:
            cache[name] = _first_tensor(x).detach()
            if stop_early and len(cache) == len(names):
                raise _StopForward
            return x

        return hook

    with model.hooks(fwd_hooks=[(n, make_hook(n)) for n in names]):
        try:
            model(input_ids)
        except _StopForward:
            pass
    missing = [n for n in names if n not in cache]
    if missing:
        raise RuntimeError(f"hook(s) {missing} did not fire during the forward pass")
    return cache


def iter_activations(
    model: HookedModel,
    input_ids: Tensor,  # Int[Tensor, "n_seq pos"]
    hook_names: Sequence[str],
    batch_size: int = 32,
    stop_early: bool = True,
) -> Iterator[tuple[int, dict[str, Tensor]]]:
    """Yield (first sequence index, {hook_name: [batch, pos, ...]}) over `input_ids` in batches."""
    device = getattr(getattr(model, "cfg", None), "device", None)
    for start in range(0, input_ids.shape[0], batch_size):
        x = input_ids[start : start + batch_size]
        if device is not None:
            x = x.to(device)
        yield start, cache_activations(model, x, hook_names, stop_early=stop_early)
