"""Autoregressive decoding over any `tokens -> logits` function (a TransformerBridge forward,
optionally inside hook contexts). Greedy at temperature 0, seeded sampling otherwise."""

from __future__ import annotations

from typing import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

Forward = Callable[[Int[Tensor, "batch pos"]], Float[Tensor, "batch pos d_vocab"]]


def next_token(
    logits: Float[Tensor, "d_vocab"], temperature: float, generator: torch.Generator | None
) -> int:
    if temperature == 0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator).item())


@torch.no_grad()
def decode(
    forward: Forward,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    seed: int | None = None,
    stop_ids: tuple[int, ...] = (),
    n_ctx: int | None = None,
) -> list[int]:
    """Return the generated token ids (without the prompt). Recomputes the full prefix each step:
    exact for any hook plan, and cheap for the small models this runs on."""
    generator = None
    if temperature > 0:
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    ids = list(prompt_ids)
    out: list[int] = []
    for _ in range(max_new_tokens):
        if n_ctx is not None and len(ids) >= n_ctx:
            break
        logits = forward(torch.tensor([ids], dtype=torch.long))[0, -1]
        tok = next_token(logits, temperature, generator)
        if tok in stop_ids:
            break
        out.append(tok)
        ids.append(tok)
    return out
