"""Tiny random models of the three families Loupe is tested on, in the micro world's tokens: GPT-2
(Conv1D layers), Llama with a ChatML template whose BOS is `<|im_start|>` (as SmolLM2's), and the
micro world's own GPT-NeoX."""

from __future__ import annotations

from pathlib import Path

import torch

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chatml_tokenizer(micro_workspace):
    """The micro world's tokenizer with ChatML's special tokens and template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_workspace.artifact("tokenizer"))
    tok.add_special_tokens(
        {
            "bos_token": "<|im_start|>",
            "eos_token": "<|im_end|>",
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        }
    )
    tok.chat_template = CHATML
    return tok


def tiny_llama(tok, seed: int = 0, init: float | None = None, layers: int = 2, n_ctx: int = 96):
    """A tiny random Llama over `tok`; `init` widens the random weights (clear argmax margins)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    extra = {} if init is None else {"initializer_range": init}
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=n_ctx,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.eos_token_id,
            **extra,
        )
    ).eval()


def tiny_gpt2(micro_workspace, path: Path, n_positions: int, n_layer: int, n_embd: int = 24):
    """A tiny random GPT-2 (Conv1D layers) in the micro world's tokens, saved with its tokenizer at
    `path`: (model, tokenizer)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(micro_workspace.artifact("tokenizer"))
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=2,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = GPT2LMHeadModel(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model, tok


def register(client, path: Path, model_id: str, model, tok):
    """`model` and `tok` saved at `path` and registered as `model_id`: the LoadedModel."""
    model.save_pretrained(path)
    tok.save_pretrained(path)
    models = client.app.state.container.models
    models.register(model_id, str(path), "hf-dir")
    return models.get(model_id)


def register_edited_copy(container, path: Path, model_id: str, edit) -> dict[str, torch.Tensor]:
    """The container's world model saved at `path` with `edit(model)` applied (under no_grad), registered as
    `model_id` with the world model as its parent (as a fine-tune records it); returns the parent's parameters."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parent_id = container.subject.model_id
    src = container.models.path(container.models.record(parent_id))
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    with torch.no_grad():
        edit(model)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(src).save_pretrained(path)
    lineage = {"parent": parent_id, "dataset_id": container.subject.dataset.id}
    container.models.register(model_id, str(path), "finetune", lineage=lineage)
    return before


def register_feature_shifted_copy(client, container, path: Path, model_id: str):
    """A copy of the micro model whose block-0 MLP output bias moves by 8 along the decoder direction of a
    live feature (the third most frequent, from the dashboards) of the SAE on blocks.1.hook_resid_pre,
    registered as `model_id` with the world model as its parent; returns (that SAE's record, the feature)."""
    c = container
    rec = next(r for r in c.saes.records(c.subject.model_id) if r.hook_name == "blocks.1.hook_resid_pre")
    sae, _ = c.saes.load(rec.id)
    feats = client.get(f"/api/saes/{rec.id}/features", params={"sort": "density", "order": "desc", "limit": 5}).json()
    j = feats["features"][2]["index"]
    u = sae.W_dec[j].detach().float()

    def edit(model):
        model.gpt_neox.layers[0].mlp.dense_4h_to_h.bias += 8.0 * u / u.norm()

    register_edited_copy(c, path, model_id, edit)
    return rec, j
