"""Which hooks steering may use on a model, and value checks shared by the steering requests."""

from __future__ import annotations

import math
import re
from typing import Any

from loupe.errors import Unprocessable
from loupe.services.models import LoadedModel

_RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


def residual_layer(lm: LoadedModel, hook: str) -> int:
    """The layer a residual-stream hook writes before (resid_pre L -> L, resid_post L -> L + 1)."""
    m = _RESID.match(hook)
    n = int(lm.info["n_layers"])
    if not m or int(m.group(1)) >= n:
        raise Unprocessable(
            f"hook {hook!r} is not a residual-stream hook of this model: use "
            f"blocks.L.hook_resid_pre or blocks.L.hook_resid_post with 0 <= L < {n}"
        )
    return int(m.group(1)) + (1 if m.group(2) == "post" else 0)


def finite(x: Any, what: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise Unprocessable(f"{what} must be a number, got {x!r}") from None
    if not math.isfinite(v):
        raise Unprocessable(f"{what} must be finite, got {x!r}")
    return v


def integer(x: Any, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise Unprocessable(f"{what} must be an integer, got {x!r}")
    return x
