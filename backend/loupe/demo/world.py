"""Presets for the built-in worlds: `demo` (the default workspace) and `micro` (tests, seconds).
Configs are dataclasses with to_dict/from_dict; `world_config(name, **overrides)` builds one."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from loupe.core.config import Config


@dataclass(frozen=True)
class WorldConfig(Config):
    name: str
    seed: int = 0
    corpus_scale: float = 1.0
    vocab_size: int = 4096
    n_layers: int = 3
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    n_ctx: int = 128
    batch_size: int = 32
    train_steps: int = 1200
    lr: float = 3e-3
    warmup_steps: int = 60
    weight_decay: float = 0.05
    checkpoint_every: int = 100
    eval_max_new_tokens: int = 24
    eval_limit: int | None = None  # cap on held-out instructions per group (micro world: seconds)


WORLDS: dict[str, WorldConfig] = {
    "demo": WorldConfig(name="demo"),
    "micro": WorldConfig(
        name="micro",
        corpus_scale=0.02,
        vocab_size=512,
        n_layers=2,
        d_model=32,
        n_heads=2,
        d_mlp=128,
        n_ctx=64,
        batch_size=8,
        train_steps=30,
        lr=1e-2,
        warmup_steps=5,
        checkpoint_every=10,
        eval_max_new_tokens=8,
        eval_limit=12,
    ),
}


def world_config(name: str = "demo", **overrides: Any) -> WorldConfig:
    if name not in WORLDS:
        raise ValueError(f"unknown world {name!r}; choose one of {sorted(WORLDS)}")
    return replace(WORLDS[name], **overrides)
