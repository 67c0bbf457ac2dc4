"""Supervised fine-tuning data: which tokens of a rendered conversation carry the loss.

Only the assistant's turns are trained on (the prompt's tokens are context, as in InstructGPT-style
SFT and TRL's `assistant_only_loss`); a plain-text document is trained on whole."""

from __future__ import annotations

from collections.abc import Sequence

IGNORE_INDEX = -100  # the label PyTorch's cross-entropy (and Hugging Face's models) skip


def labels_in_spans(
    ids: Sequence[int], offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]
) -> list[int]:
    """Labels for `ids`: a token's id where the token starts inside one of `spans` (character ranges
    of the text it was cut from; `offsets` from a fast tokenizer), IGNORE_INDEX elsewhere. Tokens with
    an empty offset (a BOS added before the text) are never labelled."""
    out = []
    for t, (a, b) in zip(ids, offsets):
        inside = b > a and any(s <= a < e for s, e in spans)
        out.append(int(t) if inside else IGNORE_INDEX)
    return out


def turn_spans(prefixes: Sequence[tuple[str, str]], full: str) -> list[tuple[int, int]]:
    """Character spans of the assistant turns in `full`, the rendered conversation, from
    (`before`, `through`) pairs per assistant turn: the rendering up to the assistant's reply (with
    its header) and up to the end of that reply. Each must be a prefix of the next and of `full`;
    ValueError names the first that is not (a template that rewrites earlier turns, e.g. one that
    drops the reasoning of past turns)."""
    spans: list[tuple[int, int]] = []
    for i, (before, through) in enumerate(prefixes):
        if not through.startswith(before) or not full.startswith(through):
            raise ValueError(f"assistant turn {i}: the rendering up to it is not a prefix of the whole conversation")
        if spans and len(before) < spans[-1][1]:
            raise ValueError(f"assistant turn {i} starts before the end of the one before it")
        spans.append((len(before), len(through)))
    return spans
