"""Configs as data (as sae-lens does): frozen dataclasses that round-trip through plain dicts, so a
manifest can record the config an artifact was built with and a newer build can read it back."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, Self


class Config:
    """Mixin for config dataclasses: `to_dict`, and `from_dict` that ignores keys the class lacks
    (a manifest written by an older or newer build) and rebuilds tuples from JSON lists."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        kinds = {f.name: f.type for f in fields(cls)}  # type: ignore[arg-type]
        kept = {k: v for k, v in d.items() if k in kinds}
        for k, v in kept.items():
            if isinstance(v, list) and "tuple" in str(kinds[k]):
                kept[k] = tuple(v)
        return cls(**kept)
