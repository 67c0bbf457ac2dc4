"""Ids that people choose (SAEs, vectors): safe as file names and in URLs."""

from __future__ import annotations

import re

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
ID_RULE = "1-100 characters: letters, digits, '_', '.', '-' (starting with a letter or digit)"


def slug(s: str) -> str:
    """A name made into an id fragment."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-")[:60] or "vector"
