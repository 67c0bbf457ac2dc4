"""Autoregressive decoding over any `tokens -> logits` function (a TransformerBridge forward,
optionally inside hook contexts). Greedy at temperature 0, seeded sampling otherwise."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from jaxtyping import Float, Int
from torch import Tensor

Forward = Callable[[Int[Tensor, "batch pos"]], Float[Tensor, "batch pos d_vocab"]]


class NonFiniteLogits(ValueError):
    """The model's logits hold NaN or no finite maximum (an intervention drove its activations past
    float range)."""


def next_token(logits: Float[Tensor, d_vocab], temperature: float, generator: torch.Generator | None) -> int:
    top = logits.double().max()
    if bool(torch.isnan(logits).any()) or not bool(torch.isfinite(top)):
        raise NonFiniteLogits("the model's next-token logits are not finite (NaN or inf)")
    if temperature == 0:
        return int(torch.argmax(logits).item())
    # the max subtracted before dividing: a tiny temperature then gives 0 and -inf (greedy), where
    # logits / temperature overflowed to inf and softmax gave NaN
    scaled = (logits.double() - top) / temperature
    probs = torch.softmax(scaled, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def decode_iter(
    forward: Forward,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    seed: int | None = None,
    stop_ids: tuple[int, ...] = (),
    n_ctx: int | None = None,
) -> Iterator[int]:
    """Yield generated token ids one at a time (the streaming form of `decode`). Each step
    recomputes the full prefix (no KV cache): exact for any hook plan, including edits at one
    prompt position, and cheap for the small models this runs on."""
    generator = None
    if temperature > 0:
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    ids = list(prompt_ids)
    for _ in range(max_new_tokens):
        if n_ctx is not None and len(ids) >= n_ctx:
            break
        with torch.no_grad():
            logits = forward(torch.tensor([ids], dtype=torch.long))[0, -1]
        tok = next_token(logits, temperature, generator)
        if tok in stop_ids:
            break
        ids.append(tok)
        yield tok


class KVForward:
    """A `Forward` for decoding that feeds the model only the tokens it has not seen yet, with the
    key/value cache of the ones it has (`step(new_ids, cache) -> (logits of new_ids, cache)`, as a
    Hugging Face causal LM does with `past_key_values`). Its logits at the last position equal a full
    forward's; a prefix that is not a continuation of the last one starts a fresh cache. Only for
    forwards without hooks that need the whole prefix (an edit at one prompt position, say)."""

    def __init__(self, step: Callable[[Tensor, object], tuple[Tensor, object]]):
        self.step = step
        self.cache: object = None
        self.seen: list[int] = []

    def __call__(self, ids: Int[Tensor, "1 pos"]) -> Float[Tensor, "1 new d_vocab"]:
        row = ids[0].tolist()
        if len(row) <= len(self.seen) or row[: len(self.seen)] != self.seen:
            self.cache, self.seen = None, []
        logits, self.cache = self.step(ids[:, len(self.seen) :], self.cache)
        self.seen = row
        return logits


def decode(
    forward: Forward,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    seed: int | None = None,
    stop_ids: tuple[int, ...] = (),
    n_ctx: int | None = None,
) -> list[int]:
    """Return the generated token ids (without the prompt)."""
    return list(decode_iter(forward, prompt_ids, max_new_tokens, temperature, seed, stop_ids, n_ctx))


@torch.no_grad()
def greedy_batch(
    forward: Forward,
    prompts: list[list[int]],
    max_new_tokens: int,
    stop_id: int | None = None,
    n_ctx: int | None = None,
    pad_id: int = 0,
) -> list[list[int]]:
    """Greedy decoding of prompts of any lengths in one batch, right-padded. With causal attention
    a token never sees the positions after it, so row i's logits at its own last position are those
    of the unpadded row (positions start at 0 for every row): the result equals decoding each
    prompt alone. Each row's ids stop before its first `stop_id`."""
    if not prompts:
        return []
    lengths = torch.tensor([len(p) for p in prompts])
    longest = int(lengths.max())
    steps = max_new_tokens if n_ctx is None else max(0, min(max_new_tokens, n_ctx - longest))
    buf = torch.full((len(prompts), longest + steps), pad_id, dtype=torch.long)
    for i, p in enumerate(prompts):
        buf[i, : len(p)] = torch.tensor(p, dtype=torch.long)
    rows = torch.arange(len(prompts))
    new: list[list[int]] = [[] for _ in prompts]
    done = torch.zeros(len(prompts), dtype=torch.bool)
    for t in range(steps):
        cur = lengths + t  # each row's length so far
        logits = forward(buf[:, : int(cur.max())])
        tok = logits[rows, cur - 1].argmax(-1)
        buf[rows, cur] = tok
        for i in range(len(prompts)):
            if not done[i]:
                if stop_id is not None and int(tok[i]) == stop_id:
                    done[i] = True
                else:
                    new[i].append(int(tok[i]))
        if bool(done.all()):
            break
    return new
