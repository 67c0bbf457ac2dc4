"""A request's interventions -> a hook plan: validated against the model, each turned into
(hook name, hook function) pairs from `loupe.core.steering`. Unknown vector or SAE ids -> NotFound;
bad hooks, positions, indices or values -> Unprocessable."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from loupe.core import steering as S
from loupe.errors import Unprocessable
from loupe.services.models import LoadedModel, hook_shapes
from loupe.services.saes.registry import SAERegistry
from loupe.services.steering.hooks import finite, integer, residual_layer
from loupe.services.steering.vectors import VectorStore
from loupe.storage.models import SAERecord

INTERVENTION_KINDS = ("ablate_direction", "add_direction", "ace", "sae_feature_add", "sae_feature_clamp", "edit")
EDIT_OPS = ("set", "scale", "zero")


class PlanBuilder:
    """Builds hook plans from interventions against the workspace's vectors and SAEs."""

    def __init__(self, vectors: VectorStore, saes: SAERegistry):
        self.vectors = vectors
        self.saes = saes

    def build(self, lm: LoadedModel, interventions: Sequence[dict[str, Any]], n_prompt: int) -> S.HookPlan:
        plan: S.HookPlan = []
        for n, iv in enumerate(interventions):
            where = f"interventions[{n}]"
            if not isinstance(iv, dict):
                raise Unprocessable(f"{where} must be an object with a 'kind'")
            kind = iv.get("kind")
            if kind in ("ablate_direction", "add_direction", "ace"):
                plan += self._direction(lm, iv, kind, where)
            elif kind in ("sae_feature_add", "sae_feature_clamp"):
                plan.append(self._sae_feature(lm, iv, kind, where))
            elif kind == "edit":
                plan.append(self._edit(lm, iv, n_prompt, where))
            else:
                raise Unprocessable(f"{where}.kind is {kind!r}; use one of {', '.join(INTERVENTION_KINDS)}")
        return plan

    def _direction(self, lm: LoadedModel, iv: dict[str, Any], kind: str, where: str) -> S.HookPlan:
        if not isinstance(iv.get("vector_id"), str):
            raise Unprocessable(f"{where}.vector_id is required for {kind}")
        v = self.vectors.load(iv["vector_id"])
        if v.model_id != lm.id:
            raise Unprocessable(f"vector {v.id!r} belongs to model {v.model_id!r}, not {lm.id!r}")
        if kind == "ablate_direction":
            return S.ablation_plan(v.r, int(lm.info["n_layers"]))
        alpha = finite(iv.get("alpha", 1.0), f"{where}.alpha")
        if kind == "add_direction":
            hook = iv.get("hook") or v.hook
            residual_layer(lm, hook)
            return [(hook, S.addition_hook(v.r, alpha))]
        return [(v.hook, S.ace_hook(v.r, v.mu_minus, alpha))]

    def _sae(self, lm: LoadedModel, iv: dict[str, Any], where: str) -> tuple[Any, SAERecord, int]:
        if not isinstance(iv.get("sae_id"), str):
            raise Unprocessable(f"{where}.sae_id is required")
        sae, rec = self.saes.load_for(iv["sae_id"], lm)
        f = integer(iv.get("feature"), f"{where}.feature")
        if not 0 <= f < int(rec.d_sae):
            raise Unprocessable(f"{where}.feature {f} is outside 0..{int(rec.d_sae) - 1} of SAE {rec.id!r}")
        return sae, rec, f

    def _sae_feature(self, lm: LoadedModel, iv: dict[str, Any], kind: str, where: str) -> tuple[str, Any]:
        sae, rec, feature = self._sae(lm, iv, where)
        value = finite(iv.get("value"), f"{where}.value")
        w = sae.W_dec[feature].detach()
        if kind == "sae_feature_add":
            return rec.hook_name, S.sae_add_hook(w, value)
        return rec.hook_name, S.sae_clamp_hook(_encoder(sae), w, feature, value)

    def _edit(self, lm: LoadedModel, iv: dict[str, Any], n_prompt: int, where: str) -> tuple[str, Any]:
        op = iv.get("op")
        if op not in EDIT_OPS:
            raise Unprocessable(f"{where}.op is {op!r}; use one of {', '.join(EDIT_OPS)}")
        value = 0.0 if op == "zero" else finite(iv.get("value"), f"{where}.value")
        pos = _position(iv.get("position"), n_prompt, where)
        if iv.get("sae_id") is not None or iv.get("feature") is not None:
            sae, rec, feature = self._sae(lm, iv, where)
            if iv.get("hook") not in (None, rec.hook_name):
                raise Unprocessable(f"{where}.hook {iv['hook']!r} differs from the SAE's hook {rec.hook_name!r}")
            w = sae.W_dec[feature].detach()
            return rec.hook_name, S.sae_feature_edit_hook(_encoder(sae), w, feature, pos, op, value)
        shapes = hook_shapes(lm)
        hook = iv.get("hook")
        if not isinstance(hook, str) or hook not in shapes:
            raise Unprocessable(
                f"{where}.hook {hook!r} is not a hook of this model (see GET /api/models; e.g. "
                f"blocks.0.mlp.hook_post, blocks.1.hook_resid_pre)"
            )
        if len(shapes[hook]) != 1:
            raise Unprocessable(
                f"{where}.hook {hook!r} has per-position shape {list(shapes[hook])}; edits need a "
                f"[batch, pos, d] activation"
            )
        if iv.get("index") is None:
            raise Unprocessable(f"{where}: give `index` (a neuron) or `sae_id` and `feature`")
        index = integer(iv.get("index"), f"{where}.index")
        if not 0 <= index < shapes[hook][0]:
            raise Unprocessable(f"{where}.index {index} is outside 0..{shapes[hook][0] - 1} of {hook}")
        return hook, S.neuron_edit_hook(index, pos, op, value)


def _position(pos: Any, n_prompt: int, where: str) -> int | None:
    """A prompt position (negative from the end), or None for every position."""
    if pos is None:
        return None
    pos = integer(pos, f"{where}.position")
    if not -n_prompt <= pos < n_prompt:
        raise Unprocessable(
            f"{where}.position {pos} is outside the prompt's {n_prompt} tokens "
            f"(0..{n_prompt - 1}, or negative from the end)"
        )
    return int(pos % n_prompt)


def _encoder(sae: Any) -> Callable[[Tensor], Tensor]:
    def encode(x: Tensor) -> Tensor:
        with torch.no_grad():
            codes: Tensor = sae.encode(x.to(sae.W_dec.dtype))
        return codes

    return encode
