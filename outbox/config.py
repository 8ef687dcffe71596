"""Settings, read from `OUTBOX_*` environment variables and an optional `.env` file.

The defaults are the embedded mode: SQLite under `.outbox/`, no broker server (an in-process
dispatcher), policies from `./policies`. Production mode refuses to start on defaults that are
only safe on a laptop.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class UnsafeConfigurationError(RuntimeError):
    """Production settings that would put actions or credentials at risk."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OUTBOX_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = "development"
    database_url: str = "sqlite:///.outbox/outbox.db"
    # None means embedded: actions are dispatched to worker threads inside the API process.
    broker_url: str | None = None
    policy_dir: Path = Path("policies")
    data_dir: Path = Path(".outbox")
    admin_token: SecretStr | None = None
    # How many worker processes share this database; SQLite is refused above one in production.
    worker_processes: int = Field(default=1, ge=1)
    embedded_worker_threads: int = Field(default=2, ge=1, le=64)

    # Execution: leases, sweeping and retries.
    lease_seconds: float = Field(default=120.0, gt=0)
    sweep_interval_seconds: float = Field(default=2.0, gt=0)
    # A queued action nobody claimed after this long is published again.
    republish_after_seconds: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    retry_base_seconds: float = Field(default=2.0, gt=0)
    retry_max_seconds: float = Field(default=600.0, gt=0)

    # Agent contract.
    idempotency_ttl_hours: int = Field(default=24, ge=24)
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    max_wait_seconds: int = Field(default=60, ge=0, le=60)
    page_size_max: int = Field(default=100, ge=1)

    # Policy: reload on file change (the embedded server and API replicas watch the directory).
    policy_watch: bool = True

    # http.request
    http_timeout_seconds: float = Field(default=10.0, gt=0)
    http_max_response_bytes: int = Field(default=1_048_576, ge=1024)

    log_level: str = "INFO"
    log_json: bool = True

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_embedded(self) -> bool:
        return self.broker_url is None

    @model_validator(mode="after")
    def _normalise_database_url(self) -> Settings:
        # `postgresql://` would pick psycopg2, which we do not ship; psycopg 3 is the driver.
        if self.database_url.startswith("postgresql://"):
            self.database_url = "postgresql+psycopg://" + self.database_url.removeprefix(
                "postgresql://"
            )
        return self

    def check_production_safety(self) -> None:
        """Refuse to run production on defaults that are only safe for a single developer."""
        if self.environment != "production":
            return
        problems: list[str] = []
        if self.admin_token is None or len(self.admin_token.get_secret_value()) < 24:
            problems.append("OUTBOX_ADMIN_TOKEN must be set to a secret of at least 24 characters")
        if self.is_sqlite and self.worker_processes > 1:
            problems.append(
                "SQLite cannot be shared by several worker processes: "
                "set OUTBOX_DATABASE_URL=postgresql+psycopg://…"
            )
        if self.is_embedded:
            problems.append("production needs a broker: set OUTBOX_BROKER_URL=redis://…")
        if problems:
            raise UnsafeConfigurationError("; ".join(problems))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
