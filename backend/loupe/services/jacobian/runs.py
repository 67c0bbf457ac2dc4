"""Training-Jacobian run settings (Belrose & Scherlis 2024's MLP on digits), their limits and ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

from loupe.core import jacobian as jac
from loupe.core.config import Config
from loupe.errors import Unprocessable
from loupe.storage.artifacts import digest

# A full P x P Jacobian in float64 is 8 P^2 bytes; with U, V and LAPACK's SVD workspace about 5 such
# matrices are alive at once. 10,000 parameters -> 0.8 GB per matrix, ~4 GB peak: the most this
# 2-core / 23 GB machine can hold beside the server and the other jobs. Time grows as P x steps.
MAX_PARAMS = 10_000
# 8x the paper's 25 epochs; time grows linearly with them (the API's bound).
MAX_EPOCHS = 200
N_TRAIN = jac.TrainConfig().n_train


JOB_KIND = "jacobian"


PAPER = {
    "seed": 0,
    "width": 64,
    "depth": 1,
    "epochs": 25,
    "batch_size": 64,
    "lr": 0.1,
    "momentum": 0.9,
    "control": "none",
    "experiments": True,
    "dtype": "float64",
    "init": "lecun",
}


@dataclass(frozen=True)
class RunSettings(Config):
    seed: int = 0
    width: int = 64
    depth: int = 1
    epochs: int = 25
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    control: str = "none"
    experiments: bool = True
    dtype: str = "float64"
    init: str = "lecun"

    @property
    def run_id(self) -> str:
        return digest(self.to_dict())[:12]

    def train_config(self) -> jac.TrainConfig:
        return jac.TrainConfig(
            seed=self.seed,
            width=self.width,
            depth=self.depth,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            momentum=self.momentum,
            # plain strings here (the API passes what it gets); validate() checks them against the literals
            control=cast(jac.Control, self.control),
            init=cast(Literal["lecun", "torch"], self.init),
        )

    @property
    def n_params(self) -> int:
        return jac.n_params(self.width, self.depth)


def validate(s: RunSettings) -> None:
    """Bad settings -> Unprocessable with the reason."""
    if not s.lr > 0:
        raise Unprocessable(f"lr must be positive (got {s.lr}); the paper's setting is 0.1")
    if not 0 <= s.momentum < 1:
        raise Unprocessable(f"momentum must be in [0, 1) (got {s.momentum})")
    if s.width < 1 or s.depth < 1 or not 1 <= s.epochs <= MAX_EPOCHS:
        raise Unprocessable(f"width and depth must be at least 1, epochs between 1 and {MAX_EPOCHS}")
    if s.control not in jac.CONTROLS:
        raise Unprocessable(f"control must be one of {', '.join(jac.CONTROLS)} (got {s.control!r})")
    if s.init not in jac.INITS:
        raise Unprocessable(f"init must be one of {', '.join(jac.INITS)} (got {s.init!r})")
    if s.dtype not in ("float64", "float32"):
        raise Unprocessable(f"dtype must be float64 or float32 (got {s.dtype!r})")
    if not 1 <= s.batch_size <= N_TRAIN:
        raise Unprocessable(f"batch_size must be between 1 and {N_TRAIN} (the training set)")
    p = s.n_params
    if p > MAX_PARAMS:
        gb = 8 * p * p / 1e9
        raise Unprocessable(
            f"a depth-{s.depth}, width-{s.width} MLP has {p:,} parameters: its full {p:,} x {p:,} training "
            f"Jacobian is {gb:.1f} GB in float64 (about 5x that with the SVD), over this server's limit of "
            f"{MAX_PARAMS:,} parameters (width <= {max_width(s.depth)} at depth {s.depth})"
        )


def max_width(depth: int) -> int:
    w = 1
    while jac.n_params(w + 1, depth) <= MAX_PARAMS:
        w += 1
    return w
