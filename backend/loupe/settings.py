"""The one Settings object. Every knob is an environment variable with the LOUPE_ prefix."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOUPE_", env_file=".env", extra="ignore")

    workspace: Path = Field(Path("workspace"), description="Directory holding the database and artifacts.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite inside the workspace.")
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "cpu"
    threads: int = Field(0, description="torch intra-op threads; 0 = all cores.")
    world: Literal["demo", "micro", "smollm2"] = Field(
        "demo",
        description=(
            "Which built-in world `loupe build` makes: the demo world, a seconds-long micro world (tests), or "
            "smollm2 (SmolLM2-135M-Instruct on the Python documentation)."
        ),
    )
    world_overrides: dict[str, Any] = Field(
        default_factory=dict, description='JSON overrides of the world preset, e.g. {"train_steps": 2000}.'
    )
    model: str | None = Field(
        None,
        description="A Hugging Face causal LM directory (or hub name) to analyse instead of the demo model.",
    )
    seed: int = 0
    max_new_tokens: int = Field(256, description="Upper bound on max_new_tokens per generate request.")
    max_prompt_chars: int = Field(20_000, description="Prompts longer than this are rejected before tokenizing.")
    max_upload_bytes: int = Field(
        50_000_000,
        ge=1,
        description="Largest dataset file accepted by POST /api/datasets (bytes); larger ones get 413.",
    )
    max_queued_jobs: int = Field(
        16,
        ge=1,
        description="Most jobs that may wait in the queue; a request that would queue another gets 429 with "
        "Retry-After (an identical request joins the job already queued or running instead).",
    )
    executor: Literal["thread", "ray"] = Field(
        "thread",
        description="Where the heavy jobs' parallel units run (caching, dashboards, gradient cache, steering sweeps, "
        "Jacobian chunks): `thread` in the job's own thread, `ray` on Ray actors (pip install 'loupe[cluster]').",
    )
    ray_address: str = Field(
        "",
        description="With LOUPE_EXECUTOR=ray: empty starts a local Ray on this machine's cores; `auto` or "
        "`ray://host:10001` joins a running cluster.",
    )
    ray_workers: int = Field(0, ge=0, description="Ray actors per job; 0 = one per CPU of the cluster.")
    ray_object_store_mb: int = Field(
        80, ge=75, description="Object store of a local Ray (MB); Ray's least is 75 MB. Ignored when joining a cluster."
    )
    frontend_dist: Path | None = Field(None, description="Built frontend; default: frontend/dist beside the package.")

    # -- who may do what (loupe.security) --
    token: SecretStr | None = Field(
        None,
        description="Every /api request needs `Authorization: Bearer <token>`. Unset on a non-loopback host: a "
        "token is generated into the workspace on first start (printed once).",
    )
    insecure_no_auth: bool = Field(
        False, description="Serve a non-loopback host without a token (anyone who reaches the port may change it)."
    )
    read_only: bool = Field(False, description="Reads and pure analyses only; every write and job start gets 403.")
    allowed_hosts: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="Host headers accepted (any port; '*.example.org' and '*' allowed), comma-separated or JSON; "
        "default: the bind host, localhost, 127.0.0.1, ::1. Others get 400 (DNS rebinding).",
    )
    max_body_bytes: int = Field(
        4_000_000, ge=1, description="Largest request body (bytes) but dataset uploads'; larger ones get 413."
    )
    sae_roots: Annotated[list[Path] | None, NoDecode] = Field(
        None,
        description="Folders POST /api/saes may register SAE directories from (comma-separated or JSON); "
        "default: imports/ in the workspace.",
    )

    @field_validator("token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, v: Any) -> Any:
        # docker-compose passes `LOUPE_TOKEN: ${LOUPE_TOKEN:-}`: an empty value means "not set"
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("allowed_hosts", "sae_roots", mode="before")
    @classmethod
    def _list_from_env(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        if v.strip().startswith("["):
            return json.loads(v)
        return [part.strip() for part in v.split(",") if part.strip()] or None

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.workspace / 'loupe.db').resolve()}"

    @property
    def artifacts_dir(self) -> Path:
        return self.workspace / "artifacts"

    def resolved_sae_roots(self) -> list[Path]:
        return list(self.sae_roots) if self.sae_roots else [self.workspace / "imports"]

    def resolved_frontend_dist(self) -> Path:
        if self.frontend_dist is not None:
            return self.frontend_dist
        return Path(__file__).resolve().parents[2] / "frontend" / "dist"


def quiet_libraries() -> None:
    """Loupe draws its own progress; silence the libraries' per-load bars and chatter."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
