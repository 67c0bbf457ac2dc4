"""Per-token layer Jacobians of a language model: d h_out[p] / d h_in[p] at one prompt position,
its SVD, and the top singular directions read through the unembedding and an SAE's decoder."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from loupe.core import layer_jacobian as lj
from loupe.errors import Unprocessable
from loupe.services.models import ModelService, fired_hooks, hook_shapes
from loupe.services.saes.registry import SAERegistry


class LayerJacobianService:
    def __init__(self, models: ModelService, saes: SAERegistry):
        self.models = models
        self.saes = saes

    def layer(
        self,
        prompt: str,
        position: int,
        hook_in: str,
        hook_out: str,
        model_id: str | None = None,
        top_k: int = 8,
        n_directions: int = 5,
    ) -> dict[str, Any]:
        lm = self.models.get(model_id)
        bridge = lm.bridge
        hooks = bridge.hook_dict
        shapes = hook_shapes(lm)  # the hooks a forward pass computes, with their per-position shapes
        for h in (hook_in, hook_out):
            if h not in hooks:
                near = [n for n in sorted(hooks) if n.split(".")[-1] == h.split(".")[-1]][:6]
                raise Unprocessable(
                    f"unknown hook {h!r} for model {lm.id}" + (f"; e.g. {', '.join(near)}" if near else "")
                )
            if h not in fired_hooks(lm):
                raise Unprocessable(
                    f"hook {h!r} is not computed in a forward pass of {lm.id} as Loupe runs it (TransformerLens "
                    "only fills it with an option switched on, e.g. split q/k/v inputs or per-head results, or "
                    "this architecture has no such activation); use a residual, attention-output or MLP hook"
                )
            if len(shapes.get(h, ())) != 1:
                shape = f"per-position shape {list(shapes[h])}" if h in shapes else "no per-position shape"
                raise Unprocessable(
                    f"hook {h!r} has {shape}; the layer Jacobian needs one vector per "
                    "token (e.g. hook_resid_pre/post, attn.hook_out, mlp.hook_post): attention patterns, scores "
                    "and per-head activations are not supported"
                )
        if hook_in == hook_out:
            raise Unprocessable("hook_in and hook_out are the same hook; give an earlier hook_in and a later hook_out")
        order = fired_hooks(lm)  # in the order a forward pass reaches them
        if order.index(hook_in) > order.index(hook_out):
            raise Unprocessable(
                f"{hook_in} comes after {hook_out} in the forward pass, so the later activation cannot "
                "depend on the earlier one (the Jacobian would be zero); swap hook_in and hook_out"
            )
        ids = lm.encode_prompt(prompt)
        if not prompt or not ids:
            raise Unprocessable("the prompt is empty")
        if len(ids) > lm.n_ctx:
            raise Unprocessable(f"the prompt has {len(ids)} tokens; the model's context is {lm.n_ctx}")
        n = len(ids)
        if not -n <= position < n:
            raise Unprocessable(
                f"position {position} is outside the prompt's {n} tokens (0..{n - 1}, or negative from the end)"
            )
        p = position % n
        tokens = torch.tensor([ids])
        t0 = time.monotonic()
        fired: dict[str, torch.Tensor] = {}  # in the order the forward pass reaches them

        def keep(name: str) -> Callable[[torch.Tensor, Any], torch.Tensor]:
            # by the name asked for: a bridge hook's own `name` may be the canonical one of an alias
            def fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
                fired.setdefault(name, act.detach())
                return act

            return fn

        with lm.lock:  # hooks live on the shared model for the duration of these passes
            with torch.no_grad():
                bridge.run_with_hooks(tokens, fwd_hooks=[(hook_in, keep(hook_in)), (hook_out, keep(hook_out))])
            x0 = fired[hook_in][0, p]
            y0 = fired[hook_out][0, p]
            if x0.dim() != 1 or y0.dim() != 1:
                raise Unprocessable(
                    "both hooks must carry one vector per position (e.g. hook_resid_pre/post, "
                    "mlp.hook_post); attention-pattern hooks are not supported"
                )
            J = lj.jacobian(self._hooked(bridge, tokens, p, hook_in, hook_out), x0)
        U, S, Vh = torch.linalg.svd(J.double(), full_matrices=False)
        secs = time.monotonic() - t0
        W_U = getattr(bridge, "W_U", None)
        rec = self.saes.for_hook(lm.id, hook_out)
        sae = (rec.id, self.saes.load(rec.id)[0].W_dec.detach().float()) if rec is not None else None
        dirs = []
        for i in range(min(n_directions, S.numel())):
            u = U[:, i].float()
            d: dict[str, Any] = {"index": i, "sigma": float(S[i])}
            if W_U is not None and u.numel() == W_U.shape[0]:
                for sign, name in ((1, "top_tokens"), (-1, "bottom_tokens")):
                    tid, val = lj.top_tokens(sign * u, W_U.detach(), top_k)
                    d[name] = [{"token": lm.tokenizer.decode([t]), "id": t, "logit": v} for t, v in zip(tid, val)]
            if sae is not None:
                fid, val = lj.top_features(u, sae[1], top_k)
                fid2, val2 = lj.top_features(-u, sae[1], top_k)
                d["sae_id"] = sae[0]
                d["top_features"] = [{"feature": f, "cosine": v} for f, v in zip(fid, val)]
                d["bottom_features"] = [{"feature": f, "cosine": v} for f, v in zip(fid2, val2)]
            dirs.append(d)
        return {
            "model_id": lm.id,
            "prompt_tokens": lm.token_strings(ids),
            "position": p,
            "token": lm.tokenizer.decode([ids[p]]),
            "hook_in": hook_in,
            "hook_out": hook_out,
            "shape": list(J.shape),
            "singular_values": S.tolist(),
            "directions": dirs,
            "frobenius_norm": float(J.norm()),
            "seconds": round(secs, 3),
            "definition": "d h_out[p] / d h_in[p], other positions' h_in held fixed (same-position block)",
        }

    @staticmethod
    def _hooked(
        bridge: Any, tokens: torch.Tensor, p: int, hook_in: str, hook_out: str
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """x (the earlier activation at position p) -> the later activation at p: one forward with the
        activation at `hook_in`, position p, replaced by x, everything else as the prompt makes it."""

        def fn(x: torch.Tensor) -> torch.Tensor:
            out: dict[str, torch.Tensor] = {}

            def put(act: torch.Tensor, hook: Any) -> torch.Tensor:
                act = act.clone()
                act[0, p] = x
                return act

            def grab(act: torch.Tensor, hook: Any) -> torch.Tensor:
                out["y"] = act[0, p]
                return act

            bridge.run_with_hooks(tokens, fwd_hooks=[(hook_in, put), (hook_out, grab)])
            return out["y"]

        return fn
