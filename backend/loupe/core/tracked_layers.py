"""Which layers of a Hugging Face causal LM EK-FAC tracks (pure torch; no FastAPI or SQL): the MLP
linears of each family, as transformers' modeling_<family>.py names them, or a peft LoRA adapter's
factors; GPT-2's Conv1D layers turned into the equal nn.Linear (kronfluence tracks nn.Linear and
nn.Conv2d only)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn


class HasModules(Protocol):
    def named_modules(
        self, memo: set[nn.Module] | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, nn.Module]]: ...


# The MLP linears of each family, as Hugging Face names them inside a decoder layer (transformers'
# modeling_<family>.py): what EK-FAC tracks on a model's MLPs. The last name of each tuple is the MLP's
# output projection (its input is TransformerLens's `blocks.L.mlp.hook_post`).
MLP_LINEARS: dict[str, tuple[str, ...]] = {
    "gpt_neox": ("mlp.dense_h_to_4h", "mlp.dense_4h_to_h"),
    "llama": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),  # SmolLM2
    "mistral": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    "qwen2": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    "qwen3": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    "gemma": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    "gemma2": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    "olmo": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    "olmo2": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    "gpt2": ("mlp.c_fc", "mlp.c_proj"),  # transformers' Conv1D, not nn.Linear
    "gptj": ("mlp.fc_in", "mlp.fc_out"),
    "phi": ("mlp.fc1", "mlp.fc2"),
}


class UntrackableModel(ValueError):
    """EK-FAC (kronfluence) cannot track the model's layers as they are: the message says why."""


def model_type(model: Any) -> str:
    """config.model_type of a Hugging Face model, through a peft wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return str(getattr(getattr(base, "config", None), "model_type", ""))


def mlp_module_names(model: HasModules, family: str | None = None) -> list[str]:
    """The MLP linear layers of a model of a known family (`MLP_LINEARS`; `family` defaults to its
    config.model_type), in module order. UntrackableModel for an unknown family, or where the layers are
    not nn.Linear (GPT-2's Conv1D: convert them first, see `linear_from_conv1d`)."""
    family = family if family is not None else model_type(model)
    suffixes = MLP_LINEARS.get(family)
    if suffixes is None:
        raise UntrackableModel(
            f"Loupe does not know the MLP layers of model type {family!r} "
            f"(it knows {', '.join(sorted(MLP_LINEARS))}); use target 'lora' for a LoRA fine-tune"
        )
    found = [(n, m) for n, m in model.named_modules() if any(n.endswith("." + s) for s in suffixes)]
    if not found:
        raise UntrackableModel(f"no MLP layers named {', '.join(suffixes)} in this {family} model")
    wrong = sorted({type(m).__name__ for _, m in found if type(m) is not nn.Linear})
    if wrong:
        raise UntrackableModel(
            f"kronfluence tracks nn.Linear and nn.Conv2d layers; this {family} model's MLP layers are {', '.join(wrong)}"
        )
    return [n for n, _ in found]


def lora_module_names(model: HasModules) -> list[str]:
    """The LoRA factors of a peft model (every `lora_A.<adapter>` and `lora_B.<adapter>` nn.Linear), in
    module order: EK-FAC on the parameters a LoRA fine-tune trained."""
    names = [
        n
        for n, m in model.named_modules()
        if type(m) is nn.Linear and len(parts := n.split(".")) >= 2 and parts[-2] in ("lora_A", "lora_B")
    ]
    if not names:
        raise UntrackableModel("the model has no LoRA layers (lora_A / lora_B nn.Linear)")
    return names


def linear_from_conv1d(model: nn.Module, names: Sequence[str]) -> None:
    """Replace the named transformers Conv1D layers (y = x W + b, W [d_in, d_out]: GPT-2's) in place by
    the equal nn.Linear (weight W^T), so kronfluence can track them."""
    modules = dict(model.named_modules())
    for n in names:
        conv = modules[n]
        if type(conv).__name__ != "Conv1D":
            continue
        w: Tensor = conv.weight
        b: Tensor | None = conv.bias
        lin = nn.Linear(w.shape[0], w.shape[1], bias=b is not None, dtype=w.dtype, device=w.device)
        with torch.no_grad():
            lin.weight.copy_(w.T)
            if b is not None:
                lin.bias.copy_(b)
        parent_name, _, leaf = n.rpartition(".")
        setattr(modules[parent_name] if parent_name else model, leaf, lin)
