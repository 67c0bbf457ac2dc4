"""Upper (and lower) bounds of the API's numbers, declared in the OpenAPI schema. A number past them is
a 422 before any work starts: no integer reaches the database beyond its column, no magnitude turns
activations into inf/NaN, no request asks for unbounded work."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, Field

from loupe.services.ids import CONTROL, NO_CONTROL_PATTERN

# Row ids and indices: the INTEGER columns are 32-bit on PostgreSQL (SQLite's are 64-bit; a larger
# Python int overflows either one, which was a 500).
MAX_ID = 2**31 - 1
# Sampling and initialisation seeds (numpy's legacy seeds, and what a JavaScript number holds exactly).
MAX_SEED = 2**32 - 1
# Token positions, counts of tokens: far beyond any context a model here has.
MAX_POSITION = 1_000_000
# Steering magnitudes (alpha, a feature's value, an edit's value or scale): hundreds already saturate a
# model; past ~1e18 float32 activations overflow to inf and the logits to NaN.
MAX_MAGNITUDE = 10_000.0
# Sampling temperature: far past 10 every token is already equally likely.
MAX_TEMPERATURE = 100.0
# The most tokens one generate request may ask for (the server's own limit, LOUPE_MAX_NEW_TOKENS, may be lower).
MAX_NEW_TOKENS = 4096
# An SAE's width (features) and a feature index within it.
MAX_FEATURES = 1 << 20
# A block (layer) index: far beyond any model's depth.
MAX_LAYER = 4095
# Prompts in one prompt set of a direction computation or an evaluation sweep.
MAX_PROMPTS = 2000

Id = Annotated[int, Path(ge=1, le=MAX_ID, description="a row id")]
FeatureIndex = Annotated[int, Path(ge=0, le=MAX_FEATURES - 1, description="a feature of the SAE")]
Magnitude = Annotated[float, Field(ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE, allow_inf_nan=False)]
Position = Annotated[int, Field(ge=-MAX_POSITION, le=MAX_POSITION)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


def _one_line(v: str) -> str:
    if CONTROL.search(v):
        raise ValueError("control characters (NUL, tab, newline, ...) are not allowed: use plain one-line text")
    return v


# A name or label as a person types it: PostgreSQL cannot store NUL in text, newlines break one-line displays.
# (the pattern only declared: checked by the validator, whose message says what is wrong)
PlainLine = Annotated[str, AfterValidator(_one_line), Field(json_schema_extra={"pattern": NO_CONTROL_PATTERN})]
