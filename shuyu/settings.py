"""One typed settings object for the whole service, validated at start-up.

Every field can be set by an environment variable ``SHUYU_<FIELD>`` (for example
``SHUYU_HOME``, ``SHUYU_DATABASE_URL``). Every limit carries its unit in its name. Lower
layers never read settings: the composition root passes them the plain values they need,
which keeps ``enclave``, ``sandbox`` and ``egress`` testable without an environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shuyu.errors import SettingsError

__all__ = ["Settings", "load_settings"]


def _default_home() -> Path:
    return Path.home() / ".shuyu"


class Settings(BaseSettings):
    """Where things live, which backends to use, and every limit."""

    model_config = SettingsConfigDict(env_prefix="SHUYU_", extra="ignore")

    # --- where things live -------------------------------------------------------------
    home: Path = Field(default_factory=_default_home, description="Root of all local state.")
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the metadata database; empty = SQLite under home.",
    )
    env: Literal["dev", "prod"] = Field(
        default="dev", description="prod refuses insecure defaults (local key file, SQLite)."
    )

    # --- keys --------------------------------------------------------------------------
    kms: Literal["local", "vault"] = Field(
        default="local", description="Where the master key lives: a local file or Vault transit."
    )
    vault_url: str = Field(default="", description="Vault address, for kms=vault.")
    vault_key_name: str = Field(default="shuyu-master", description="Vault transit key name.")

    # --- audit -------------------------------------------------------------------------
    audit_checkpoint_every: int = Field(
        default=50, ge=1, description="Sign a checkpoint after this many audit entries."
    )

    # --- sandbox limits ----------------------------------------------------------------
    sandbox_image: str = Field(default="shuyu-sandbox", description="Local image repository.")
    sandbox_runtime: Literal["runc", "runsc"] = Field(
        default="runc", description="OCI runtime; runsc runs the containers under gVisor."
    )
    sandbox_memory_bytes: int = Field(default=2 * 1024**3, ge=64 * 1024**2)
    sandbox_pids_limit: int = Field(default=128, ge=16)
    sandbox_cpus: float = Field(default=1.0, gt=0)
    sandbox_tmpfs_bytes: int = Field(default=256 * 1024**2, ge=1024**2)
    sandbox_timeout_s: float = Field(default=300.0, gt=0, description="Wall clock per job.")
    max_output_bytes: int = Field(
        default=64 * 1024**2, ge=1024, description="Largest result a job may return."
    )
    warm_pool_size: int = Field(default=1, ge=0, description="Warm sandboxes; 0 disables.")
    warm_session_idle_s: float = Field(
        default=300.0, gt=0, description="A warm session is destroyed after this idle time."
    )
    cold_spares: int = Field(
        default=1,
        ge=0,
        description="One-shot sandboxes started ahead, libraries imported, for jobs that must "
        "run cold (Python, model checks); each serves one job and is destroyed. Needs the warm "
        "pool (warm_pool_size > 0); 0 starts every cold job from nothing.",
    )

    # --- service -----------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Address `shuyu serve` binds.")
    port: int = Field(default=8750, ge=1, le=65535)
    max_request_bytes: int = Field(default=8 * 1024**2, ge=1024)
    rate_per_token_per_min: int = Field(default=600, ge=1)
    max_concurrent_jobs_per_scenario: int = Field(default=4, ge=1)
    job_workers: int = Field(
        default=3,
        ge=1,
        le=32,
        description="Job runner threads in `shuyu serve`: more overlap one job's checks, "
        "ledger and gate with another's sandbox run (each may hold a sandbox); 3 answered "
        "17–26 % more than 1 at 1M rows in benchmarks/throughput.py (RESULTS.md).",
    )

    @model_validator(mode="after")
    def _refuse_insecure_prod(self) -> Settings:
        if self.env == "prod":
            if self.kms == "local":
                raise ValueError("env=prod refuses kms=local: use kms=vault")
            if self.resolved_database_url.startswith("sqlite"):
                raise ValueError("env=prod refuses SQLite: set SHUYU_DATABASE_URL to PostgreSQL")
        return self

    # --- derived paths -----------------------------------------------------------------
    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'shuyu.db'}"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def master_key_path(self) -> Path:
        return self.keys_dir / "master.key"

    @property
    def signing_key_path(self) -> Path:
        return self.keys_dir / "signing.key"

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    @property
    def releases_dir(self) -> Path:
        return self.home / "releases"


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings; a bad value becomes one clear SettingsError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        raise SettingsError(
            f"invalid settings: {exc}",
            hint="fix the SHUYU_* environment variable named above",
        ) from exc
