"""Migration 0007 creates exactly the tables the users models describe, on both backends, and
downgrades cleanly."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlmodel import SQLModel

import outbox.models  # noqa: F401  (registers every table)
from outbox.config import Settings
from outbox.migrations import alembic_config, current, upgrade

USERS_TABLES = {"users", "console_sessions", "console_login_attempts"}


def _names(change: object) -> set[str]:
    found: set[str] = set()
    for part in change if isinstance(change, list) else [change]:
        for item in part if isinstance(part, tuple) else ():
            name = getattr(item, "name", None) or getattr(getattr(item, "table", None), "name", None)
            if isinstance(name, str):
                found.add(name)
            if isinstance(item, str):
                found.add(item)
    return found


def test_0007_creates_the_users_tables_as_the_models_describe(empty_database: str) -> None:
    settings = Settings(database_url=empty_database)
    upgrade(settings, "0007")
    assert current(settings) == "0007"
    engine = create_engine(empty_database)
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
            indexes = {index["name"] for table in USERS_TABLES for index in inspect(connection).get_indexes(table)}
    finally:
        engine.dispose()

    assert [change for change in diff if _names(change) & USERS_TABLES] == []
    assert {
        "ix_console_sessions_user_id",
        "ix_console_sessions_expires_at",
        "ix_console_login_attempts_email_created_at",
        "ix_console_login_attempts_client_ip_created_at",
    } <= indexes


def test_0007_downgrades_to_0006_and_upgrades_again(empty_database: str) -> None:
    settings = Settings(database_url=empty_database)
    upgrade(settings, "0007")

    command.downgrade(alembic_config(settings), "0006")

    engine = create_engine(empty_database)
    try:
        with engine.connect() as connection:
            assert not USERS_TABLES & set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    upgrade(settings)
    assert (current(settings) or "") >= "0007"
