"""Measurements on the Hugging Face model that kronfluence tracks: where an SAE's hook sits on it,
capturing that activation, and an SAE feature's pre-activation as a differentiable measurement."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from loupe.core import tracked_layers as L
from loupe.errors import Unprocessable

# Where each family keeps its decoder layers on the Hugging Face model (transformers' modeling files)
LAYER_LISTS = ("gpt_neox.layers", "model.layers", "transformer.h")


def decoder_layers(model: Any) -> Any:
    """The decoder layers (a ModuleList) of a Hugging Face causal LM, through a peft wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for path in LAYER_LISTS:
        try:
            return base.get_submodule(path)
        except AttributeError:
            continue
    raise Unprocessable(f"Loupe does not know where a {L.model_type(model) or 'this'} model keeps its layers")


def hf_hook_site(model: Any, hook_name: str) -> tuple[torch.nn.Module, str]:
    """The Hugging Face module whose input (or output) equals a TransformerLens hook, for every family of
    `core.tracked_layers.MLP_LINEARS`: blocks.L.mlp.hook_post = the input of layer L's MLP output projection
    (dense_4h_to_h, down_proj, c_proj, ...: the activation, act(gate) * up in a gated MLP);
    blocks.L.hook_resid_pre = the input of layers[L]; blocks.L.hook_resid_post = its output."""
    parts = hook_name.split(".")
    unknown = Unprocessable(
        f"hook {hook_name!r} has no Hugging Face site Loupe knows "
        "(supported: blocks.L.mlp.hook_post, blocks.L.hook_resid_pre, blocks.L.hook_resid_post)"
    )
    if len(parts) < 3 or parts[0] != "blocks":
        raise unknown
    try:
        block = decoder_layers(model)[int(parts[1])]
    except (IndexError, ValueError):
        raise unknown from None
    rest = ".".join(parts[2:])
    if rest == "mlp.hook_post":
        family = L.model_type(model)
        if family not in L.MLP_LINEARS:
            raise Unprocessable(f"Loupe does not know the MLP of model type {family!r}")
        return block.get_submodule(L.MLP_LINEARS[family][-1]), "input"
    if rest == "hook_resid_pre":
        return block, "input"
    if rest == "hook_resid_post":
        return block, "output"
    raise unknown


class HookCapture:
    """Context manager keeping the tensor at a hook site (with its graph) for a measurement."""

    def __init__(self, model: Any, hook_name: str):
        self.module, self.side = hf_hook_site(model, hook_name)
        self.value: Tensor | None = None
        self._h: RemovableHandle | None = None

    @property
    def captured(self) -> Tensor:
        """The tensor a forward pass left at the site."""
        assert self.value is not None, "no forward pass reached the hook site"
        return self.value

    def __enter__(self) -> HookCapture:
        if self.side == "output":

            def on_output(m: torch.nn.Module, inp: tuple[Any, ...], out: Any) -> None:
                self.value = out[0] if isinstance(out, tuple) else out

            self._h = self.module.register_forward_hook(on_output)
        else:

            def on_input(m: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                self.value = args[0] if args else kwargs["hidden_states"]

            self._h = self.module.register_forward_pre_hook(on_input, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._h is not None  # set by __enter__
        self._h.remove()


def sae_feature_value(sae: Any, acts: Tensor, feature: int) -> Tensor:
    """The feature's pre-activation (encoder output before the sparsifying non-linearity) at every
    position [..., ]: differentiable everywhere and equal to the activation wherever the feature fires."""
    x = sae.process_sae_in(acts) if hasattr(sae, "process_sae_in") else acts - sae.b_dec
    value: Tensor = x @ sae.W_enc[:, feature] + sae.b_enc[feature]
    return value
