"""Loading a Hugging Face causal LM for analysis: through TransformerLens's TransformerBridge (every
activation addressed by its hook name), or as the plain Hugging Face module (kronfluence tracks its
nn.Linear layers)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def load_bridge(path: str, device: str = "cpu") -> tuple[Any, Any]:
    """(TransformerBridge, tokenizer) of a Hugging Face model directory or hub name."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    if Path(path).is_dir():
        # a local directory never needs the hub; keep any library from trying
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(path)
    bridge = TransformerBridge.boot_transformers(path, tokenizer=tokenizer, device=device)
    bridge.eval()
    return bridge, tokenizer


def load_tokenizer(path: str) -> Any:
    """The tokenizer of a Hugging Face model directory or hub name, without the model."""
    from transformers import AutoTokenizer

    if Path(path).is_dir():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return AutoTokenizer.from_pretrained(path)


def describe(bridge: Any) -> dict[str, Any]:
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


def load_hf_model(model_dir: Path) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(str(model_dir))
    model.eval()
    return model
