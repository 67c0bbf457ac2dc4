"""Configs as data (as sae-lens does): frozen dataclasses that round-trip through plain dicts, so a
manifest can record the config an artifact was built with and a newer build can read it back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any, Self

# progress(done, total or None, message): how long work reports itself, from core up to the job rows
Progress = Callable[[float, float | None, str], None]


def no_progress(done: float, total: float | None, message: str) -> None:
    return None


class Config:
    """Mixin for config dataclasses: `to_dict`, and `from_dict` that ignores keys the class lacks
    (a manifest written by an older or newer build) and rebuilds tuples from JSON lists."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = asdict(self)  # type: ignore[call-overload]  # the subclass is the dataclass
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        kinds = {f.name: f.type for f in fields(cls)}  # type: ignore[arg-type]
        kept = {k: v for k, v in d.items() if k in kinds}
        for k, v in kept.items():
            if isinstance(v, list) and "tuple" in str(kinds[k]):
                kept[k] = tuple(v)
        return cls(**kept)
