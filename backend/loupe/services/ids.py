"""Ids that people choose (SAEs, vectors): safe as file names and in URLs; names and labels: plain text."""

from __future__ import annotations

import re

from loupe.errors import Unprocessable

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
ID_RULE = "1-100 characters: letters, digits, '_', '.', '-' (starting with a letter or digit)"


def slug(s: str) -> str:
    """A name made into an id fragment."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-")[:60] or "vector"


CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f]*$"  # the same rule as a JSON-schema pattern


def plain_text(value: str, what: str, max_chars: int) -> str:
    """A one-line name or label as a person typed it: no control characters (PostgreSQL cannot store
    NUL in text; tabs and newlines break the one-line displays), at most `max_chars`."""
    if CONTROL.search(value):
        raise Unprocessable(f"{what} has a control character (NUL, tab, newline, ...); use plain one-line text")
    if len(value) > max_chars:
        raise Unprocessable(f"{what} has {len(value):,} characters; the limit is {max_chars:,}")
    return value
