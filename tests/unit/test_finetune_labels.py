"""Which tokens a fine-tune trains on: the assistant's turns only."""

from __future__ import annotations

import pytest

from loupe.core.finetune import IGNORE_INDEX, labels_in_spans, turn_spans


def test_labels_keep_tokens_that_start_inside_a_span():
    # text "ab|cd|ef" cut into tokens at offsets; a BOS with an empty offset first
    ids = [1, 10, 11, 12, 13]
    offsets = [(0, 0), (0, 2), (2, 4), (4, 6), (6, 8)]
    assert labels_in_spans(ids, offsets, [(2, 6)]) == [IGNORE_INDEX, IGNORE_INDEX, 11, 12, IGNORE_INDEX]
    assert labels_in_spans(ids, offsets, [(3, 5)]) == [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 12, IGNORE_INDEX]
    assert labels_in_spans(ids, offsets, [(0, 8)]) == [IGNORE_INDEX, 10, 11, 12, 13]  # never the BOS
    assert labels_in_spans(ids, offsets, []) == [IGNORE_INDEX] * 5


def test_turn_spans_from_prefix_renderings():
    full = "U: hi\nA: hello<end>U: bye\nA: ciao<end>"
    before1, through1 = "U: hi\nA:", "U: hi\nA: hello<end>"
    before2 = through1 + "U: bye\nA:"
    spans = turn_spans([(before1, through1), (before2, full)], full)
    assert [full[a:b] for a, b in spans] == [" hello<end>", " ciao<end>"]
    with pytest.raises(ValueError, match="assistant turn 1"):
        turn_spans([(before1, through1), ("U: rewritten", full)], full)
