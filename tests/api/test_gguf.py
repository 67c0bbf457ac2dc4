"""`loupe models import FILE.gguf`: a tiny random Llama written as GGUF (float32, a byte-level BPE
tokenizer in its metadata) imports into the workspace, registers, and gives the original's logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from loupe.errors import LoupeError, NotFound, Unprocessable

N_LAYERS, D_MODEL, D_MLP, N_HEADS, N_KV_HEADS, N_CTX = 2, 32, 64, 4, 2, 64
MERGES = ["Ġ t", "h e", "Ġt he", "i n"]


def _tokens() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    spelling = bytes_to_unicode()
    return [spelling[b] for b in range(256)] + [m.replace(" ", "") for m in MERGES] + ["<|endoftext|>"]


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's row order for q/k (convert_hf_to_gguf.py); transformers undoes it on load."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_llama_gguf(path: Path, architecture: str = "llama", chat_template: str | None = None) -> torch.nn.Module:
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    tokens = _tokens()
    eos = len(tokens) - 1
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokens),
        hidden_size=D_MODEL,
        intermediate_size=D_MLP,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        num_key_value_heads=N_KV_HEADS,
        max_position_embeddings=N_CTX,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    model = LlamaForCausalLM(cfg).eval()
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}

    w = gguf.GGUFWriter(str(path), architecture)
    w.add_name("tiny-llama")
    w.add_context_length(N_CTX)
    w.add_embedding_length(D_MODEL)
    w.add_block_count(N_LAYERS)
    w.add_feed_forward_length(D_MLP)
    w.add_head_count(N_HEADS)
    w.add_head_count_kv(N_KV_HEADS)
    w.add_rope_dimension_count(D_MODEL // N_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]) if cfg.rope_parameters else 10000.0)
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.NORMAL] * eos + [gguf.TokenType.CONTROL])
    w.add_token_merges(MERGES)
    w.add_bos_token_id(eos)
    w.add_eos_token_id(eos)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    for i in range(N_LAYERS):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        w.add_tensor(f"blk.{i}.attn_q.weight", _permute(sd[p + "self_attn.q_proj.weight"], N_HEADS))
        w.add_tensor(f"blk.{i}.attn_k.weight", _permute(sd[p + "self_attn.k_proj.weight"], N_KV_HEADS))
        w.add_tensor(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        w.add_tensor(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        w.add_tensor(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


@pytest.fixture(scope="module")
def container(tmp_path_factory):
    from loupe.services.container import Container
    from loupe.services.workspace import Workspace
    from loupe.settings import Settings

    settings = Settings(workspace=tmp_path_factory.mktemp("gguf-ws"), database_url=None)
    ws = Workspace.open(settings)
    yield Container(settings, ws)
    ws.close()


def test_a_gguf_file_imports_registers_and_keeps_its_logits(container, tmp_path):
    from loupe.services.models.gguf import file_sha256, import_gguf
    from loupe.storage.artifacts import read_manifest

    src = tmp_path / "tiny-llama.f32.gguf"
    original = write_tiny_llama_gguf(src)

    rec = import_gguf(container.models, src, "tiny-gguf", name="Tiny GGUF Llama")
    assert rec.source == "gguf" and rec.name == "Tiny GGUF Llama"
    assert rec.config["n_layers"] == N_LAYERS and rec.config["d_model"] == D_MODEL
    assert "blocks.1.hook_resid_post" in rec.config["hook_names"]

    assert rec.path == "artifacts/models/tiny-gguf"  # relative to the workspace
    path = Path(container.models.path(rec))
    assert path == container.ws.artifact("models", "tiny-gguf")
    assert (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()
    manifest = read_manifest(path)
    assert manifest is not None
    assert manifest["source_sha256"] == file_sha256(src) and manifest["source_file"] == str(src.resolve())
    assert manifest["conversion"] == "dequantized from GGUF"

    lm = container.models.get("tiny-gguf")
    ids = torch.tensor([[5, 100, 200, 256, 259, 3, 260]])
    with torch.no_grad():
        expect = original(ids).logits
        got = lm.bridge(ids, return_type="logits")
    diff = (got.float() - expect).abs().max().item()
    print(f"GGUF import logit max abs difference: {diff:.3g}")
    assert diff < 1e-4

    # the tokenizer came from the GGUF metadata: its merges apply, the control token stays whole
    assert lm.tokenizer("the", add_special_tokens=False)["input_ids"] == [ord("t"), 257]
    assert lm.tokenizer.convert_tokens_to_ids("<|endoftext|>") == 260

    with pytest.raises(Unprocessable, match="already taken"):
        import_gguf(container.models, src, "tiny-gguf")


def test_bad_gguf_imports_say_what_is_wrong(container, tmp_path):
    from loupe.services.models.gguf import import_gguf

    with pytest.raises(NotFound, match="does not exist"):
        import_gguf(container.models, tmp_path / "missing.gguf", "missing")

    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a gguf file")
    with pytest.raises(Unprocessable, match="not a GGUF file"):
        import_gguf(container.models, not_gguf, "not-gguf")

    with pytest.raises(Unprocessable, match="invalid model id"):
        import_gguf(container.models, not_gguf, "../escape")

    strange = tmp_path / "strange.gguf"
    write_tiny_llama_gguf(strange, architecture="notanarch")
    with pytest.raises(Unprocessable, match="notanarch"):
        import_gguf(container.models, strange, "strange")

    for err in (NotFound("x"), Unprocessable("x")):
        assert isinstance(err, LoupeError) and err.status_code in (404, 422)
    assert container.models.record("strange") is None and not container.ws.artifact("models", "strange").exists()
