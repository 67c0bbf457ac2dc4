"""Decoding with a KV cache (the plain Hugging Face module sharing the bridge's weights) gives the
same tokens as recomputing the whole prefix through the bridge, for three families."""

from __future__ import annotations

import pytest
import torch

from loupe.core.generation import KVForward, decode


def _tiny(family: str):
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    torch.manual_seed(0)
    common = {"vocab_size": 64, "bos_token_id": 0, "eos_token_id": 1}
    if family == "llama":
        return LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            tie_word_embeddings=True,
            **common,
        )
    if family == "neox":
        return GPTNeoXConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            **common,
        )
    return GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **common)


@pytest.mark.parametrize("family", ["llama", "neox", "gpt2"])
def test_kv_cache_decoding_equals_full_prefix_decoding(family, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from loupe.services.models import LoadedModel, decoding_forward, describe, load_bridge, locked_forward

    model = AutoModelForCausalLM.from_config(_tiny(family))
    vocab = {f"t{i}": i for i in range(64)}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="t2"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="t0", eos_token="t1", unk_token="t2")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    bridge, tokenizer = load_bridge(str(tmp_path))
    lm = LoadedModel(id=family, bridge=bridge, tokenizer=tokenizer, info=describe(bridge))

    plain = lm.plain_module()
    assert plain is not None
    emb = plain.get_input_embeddings().weight
    assert any(p.data_ptr() == emb.data_ptr() for p in bridge.original_model.parameters())  # shared, not copied

    prompt = [0, 5, 9, 13, 22, 7]
    full = decode(locked_forward(lm), prompt, 20, stop_ids=())
    cached = decode(decoding_forward(lm), prompt, 20, stop_ids=())
    assert cached == full and len(full) == 20
    sampled = decode(decoding_forward(lm), prompt, 12, temperature=1.0, seed=3)
    assert sampled == decode(locked_forward(lm), prompt, 12, temperature=1.0, seed=3)


def test_kv_forward_feeds_only_new_tokens_and_restarts_on_a_new_prefix():
    fed: list[list[int]] = []

    def step(new: torch.Tensor, cache: object) -> tuple[torch.Tensor, object]:
        fed.append(new[0].tolist())
        n = (0 if cache is None else int(cache)) + new.shape[1]  # type: ignore[call-overload]
        return torch.full((1, new.shape[1], 3), float(n)), n

    f = KVForward(step)
    assert f(torch.tensor([[4, 5, 6]]))[0, -1, 0] == 3
    assert f(torch.tensor([[4, 5, 6, 7]]))[0, -1, 0] == 4
    assert f(torch.tensor([[4, 9]]))[0, -1, 0] == 2  # not a continuation: a fresh cache
    assert fed == [[4, 5, 6], [7], [4, 9]]
