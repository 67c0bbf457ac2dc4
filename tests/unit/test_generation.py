"""decode() against forward functions whose answers are known in closed form."""

import pytest
import torch

from loupe.core.generation import NonFiniteLogits, decode, next_token

V = 7


def successor(ids: torch.Tensor) -> torch.Tensor:
    """A 'model' whose argmax after token t is (t + 1) mod V."""
    logits = torch.full((*ids.shape, V), -5.0)
    logits.scatter_(-1, ((ids + 1) % V)[..., None], 5.0)
    return logits


def uniform(ids: torch.Tensor) -> torch.Tensor:
    return torch.zeros((*ids.shape, V))


def test_greedy_follows_argmax():
    assert decode(successor, [3], max_new_tokens=5) == [4, 5, 6, 0, 1]


def test_stops_at_stop_token_and_context():
    assert decode(successor, [3], max_new_tokens=10, stop_ids=(6,)) == [4, 5]
    assert decode(successor, [0, 1, 2], max_new_tokens=10, n_ctx=5) == [3, 4]


def test_sampling_is_seeded_and_covers_the_distribution():
    a = decode(uniform, [0], 200, temperature=1.0, seed=11)
    b = decode(uniform, [0], 200, temperature=1.0, seed=11)
    c = decode(uniform, [0], 200, temperature=1.0, seed=12)
    assert a == b and a != c
    counts = torch.bincount(torch.tensor(a), minlength=V).float()
    assert counts.min() > 10  # 200 uniform draws over 7 tokens: about 28.6 each


def test_low_temperature_sampling_approaches_greedy():
    logits = torch.tensor([0.0, 1.0, 0.5])
    g = torch.Generator().manual_seed(0)
    assert {next_token(logits, 0.01, g) for _ in range(50)} == {1}
    assert next_token(logits, 0.0, None) == 1


def test_greedy_batch_of_ragged_prompts_equals_one_at_a_time():
    # a causal 'model' whose next token depends on the whole prefix: (sum of ids + position) mod V
    def causal(ids):
        csum = ids.cumsum(-1) + torch.arange(ids.shape[1])
        logits = torch.full((*ids.shape, V), -5.0)
        logits.scatter_(-1, (csum % V)[..., None], 5.0)
        return logits

    from loupe.core.generation import greedy_batch

    prompts = [[1, 2, 3], [4], [5, 6], [0, 0, 0, 0, 1]]
    batched = greedy_batch(causal, prompts, 6, stop_id=3)
    alone = [decode(causal, p, 6, stop_ids=(3,)) for p in prompts]
    assert batched == alone
    assert any(len(b) < 6 for b in batched)  # the stop token did cut some row short


def test_a_tiny_temperature_is_the_greedy_choice_not_nan():
    """logits / 5e-324 overflowed to inf and softmax gave NaN; with the max subtracted first the largest
    logit gets probability 1."""
    logits = torch.tensor([1.0, 30.0, -4.0, 29.5])
    g = torch.Generator().manual_seed(0)
    assert {next_token(logits, t, g) for t in (5e-324, 1e-300, 1e-30) for _ in range(20)} == {1}
    assert abs(sum(next_token(logits, 1e6, g) == 1 for _ in range(2000)) / 2000 - 0.25) < 0.05  # ~uniform


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_non_finite_logits_raise_a_named_error(bad, temperature):
    logits = torch.tensor([0.0, bad, 1.0])
    with pytest.raises(NonFiniteLogits):
        next_token(logits, temperature, torch.Generator().manual_seed(0))
    with pytest.raises(NonFiniteLogits):
        next_token(torch.full((3,), float("-inf")), temperature, torch.Generator().manual_seed(0))
