"""Influence configuration: sizes of the EK-FAC fit and the gradient cache, and the query's
settings, as data (a world's presets choose them)."""

from __future__ import annotations

from dataclasses import dataclass

from loupe.core import influence as I
from loupe.core import packed as P
from loupe.core.config import Config

FACTORS_NAME = "ekfac"


CACHE_FORMAT = f"lloyd-max 2-bit, blocks of {P.BLOCK}"  # a cache of another format is rebuilt


ANALYSIS_NAME = "loupe"


@dataclass(frozen=True)
class InfluenceConfig(Config):
    name: str
    covariance_max_examples: int | None = 4096  # sequences for E[a a^T], E[g g^T] (None: all)
    lambda_max_examples: int | None = 2048  # sequences for the eigenvalue correction
    batch_size: int = 16
    cache_dim: int | None = None  # whitened eigen-coordinates kept per sequence, over all
    # layers (None: every one; at 2 bits, 111 KB a sequence here)
    damping_scale: float = I.DAMPING_SCALE
    shard_rows: int = 4096
    query_rank: int | None = None  # query batching: rank of the query gradient block (None: full)
    tfidf_candidates: int = 2000  # candidates kept by the TF-IDF filter
    precise_candidates: int = 50  # precise mode re-scores this many (TF-IDF or fast top)
    rescore_candidates: int = 16  # fast mode re-scores the cache's top this many exactly: about
    # 20 ms each on the 3-layer demo model on 2 slow cores, next to
    # 0.29 s for the scan (eval medians: 16 -> 0.73 s, 24 -> 0.93 s,
    # 56 -> 1.61 s, each with served top-10 overlap 1.0)
    max_query_tokens: int = 0  # 0: the model's context
    seed: int = 0


QUERY_TIME_FIELDS = ("query_rank", "tfidf_candidates", "precise_candidates", "rescore_candidates", "max_query_tokens")


TARGETS = ("mlp", "lora")  # what EK-FAC tracks: the MLP linears, or a LoRA fine-tune's adapter factors


def index_config(name: str, preset: InfluenceConfig | None, target: str = "mlp") -> InfluenceConfig:
    """The settings of an index built from the API on a registered dataset: the world's query-time
    settings; factors fitted on up to 2,048 / 1,024 examples (a LoRA target: 512 / 256, since its largest
    Kronecker factor is (d_model + 1)^2, 577^2 on SmolLM2, which 512 conversations' ~38 k tokens estimate
    well, and each example is a forward and backward pass of the whole model); a cache of the 65,536 most
    energetic whitened coordinates (every one on a small model; 16 KB a sequence at 2 bits, so 10,000
    fine-tuning examples take 170 MB)."""
    query = {k: getattr(preset, k) for k in QUERY_TIME_FIELDS} if preset is not None else {}
    lora = target == "lora"
    return InfluenceConfig(
        name,
        covariance_max_examples=512 if lora else 2048,
        lambda_max_examples=256 if lora else 1024,
        batch_size=8,
        cache_dim=65_536,
        shard_rows=4096,
        **query,
    )
