"""Migration 0003 creates exactly the mail tables the models describe, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import outbox.models  # noqa: F401  (registers every table)
from outbox.migrations import current
from outbox.runtime import Runtime

MAIL_TABLES = {"mail_deliveries", "mail_suppressions", "mail_pauses", "mail_feedback_events", "mail_subdomain_state"}


def test_the_mail_tables_match_the_models(runtime: Runtime) -> None:
    assert current(runtime.settings) == "0003" or (current(runtime.settings) or "") > "0003"
    engine = create_engine(runtime.settings.database_url)
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    finally:
        engine.dispose()

    def table_of(change: object) -> str | None:
        for part in change if isinstance(change, list) else [change]:
            for item in part if isinstance(part, tuple) else ():
                name = getattr(item, "name", None) or getattr(getattr(item, "table", None), "name", None)
                if isinstance(name, str) and name in MAIL_TABLES:
                    return name
                if isinstance(item, str) and item in MAIL_TABLES:
                    return item
        return None

    assert [d for d in diff if table_of(d) is not None] == []
