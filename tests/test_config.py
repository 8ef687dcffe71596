"""Production refuses the defaults that are only safe on a laptop."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from outbox.config import Settings, UnsafeConfigurationError


def test_embedded_defaults() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database_url == "sqlite:///.outbox/outbox.db"
    assert settings.is_embedded
    settings.check_production_safety()  # development: nothing to refuse


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"broker_url": "redis://r"}, "OUTBOX_ADMIN_TOKEN"),
        ({"admin_token": SecretStr("short"), "broker_url": "redis://r"}, "OUTBOX_ADMIN_TOKEN"),
        (
            {"admin_token": SecretStr("x" * 32), "broker_url": "redis://r", "worker_processes": 4},
            "SQLite cannot be shared",
        ),
        ({"admin_token": SecretStr("x" * 32), "database_url": "postgresql://db/outbox"}, "production needs a broker"),
    ],
)
def test_production_refuses_unsafe_settings(overrides: dict[str, object], message: str) -> None:
    settings = Settings(_env_file=None, environment="production", **overrides)  # type: ignore[call-arg, arg-type]
    with pytest.raises(UnsafeConfigurationError, match=message):
        settings.check_production_safety()


def test_safe_production_settings_start() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="production",
        admin_token=SecretStr("x" * 32),
        database_url="postgresql://db/outbox",
        broker_url="redis://redis:6379/0",
        worker_processes=4,
        unsubscribe_secret=SecretStr("u" * 32),  # mail is configured (policies/mail.yaml)
        audit_signing_key=SecretStr("k" * 43),  # checkpoints are signed (docs/audit.md)
    )
    settings.check_production_safety()
    assert settings.database_url == "postgresql+psycopg://db/outbox"
