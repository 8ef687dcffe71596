"""Migration 0002 on a database that already holds approval requests (SQLite; PostgreSQL runs
it in every test session through the fixtures)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, text

from outbox.config import Settings
from outbox.migrations import alembic_config, current, upgrade


def test_0002_upgrades_existing_requests_and_downgrades(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(settings, "0001")
    engine = create_engine(settings.database_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO agents (id, name, roles, created_at)"
                " VALUES ('agt_1', 'old-bot', '[]', '2026-01-01 00:00:00')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO actions (id, agent_id, tool, args, idempotency_key, status, decision_effect,"
                " decision_rules, targets, policy_version, request, attempts, created_at, updated_at)"
                " VALUES ('act_1', 'agt_1', 'http.request', '{}', 'k', 'awaiting_approval', 'approve',"
                " '[]', '[]', 'v1', '{}', 0, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO approval_requests (id, action_id, digest, status, rules, quorum, decisions,"
                " created_at, expires_at) VALUES ('apr_1', 'act_1', 'd', 'pending', '[]', 1, '[]',"
                " '2026-01-01 00:00:00', '2026-01-01 01:00:00')"
            )
        )

    upgrade(settings, "0002")
    assert current(settings) == "0002"
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT policy_version, requested_by, bound_targets, gate FROM approval_requests")
        ).one()
    assert tuple(row) == ("", "", "[]", "{}")

    command.downgrade(alembic_config(settings), "0001")
    assert current(settings) == "0001"
    upgrade(settings)  # and on to head: later revisions build on 0002
    engine.dispose()
