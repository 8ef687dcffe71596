"""Console users against real databases (SQLite and PostgreSQL): the runtime, the `outbox users`
CLI in this process, and helpers to read what was stored and audited."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlmodel import col, select
from typer.testing import CliRunner, Result

from outbox.audit.models import AuditEvent
from outbox.cli.main import app
from outbox.config import get_settings
from outbox.runtime import Runtime
from outbox.users.models import Role
from outbox.users.service import add_user, set_password

PASSWORD = "correct horse battery staple"


@dataclass
class UsersCli:
    """`outbox users …` in this process, against the test's database."""

    env: pytest.MonkeyPatch
    runner: CliRunner
    runtime: Runtime

    def __call__(self, *args: str, input: str | None = None, ok: bool = True) -> Result:
        result = self.runner.invoke(app, ["users", *args], input=input)
        if ok:
            assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        return result


@pytest.fixture
def users_cli(monkeypatch: pytest.MonkeyPatch, runtime: Runtime) -> Iterator[UsersCli]:
    settings = runtime.settings
    monkeypatch.setenv("OUTBOX_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("OUTBOX_POLICY_DIR", str(settings.policy_dir))
    monkeypatch.setenv("OUTBOX_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("OUTBOX_LOG_JSON", "false")
    monkeypatch.setenv("OUTBOX_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("OUTBOX_POLICY_WATCH", "false")
    get_settings.cache_clear()
    yield UsersCli(monkeypatch, CliRunner(), runtime)
    get_settings.cache_clear()


def add_person(runtime: Runtime, email: str, *, role: Role = Role.APPROVER, password: str | None = PASSWORD) -> None:
    add_user(runtime.db, email, role=role, actor="test")
    if password is not None:
        set_password(runtime.db, email, password, actor="test")


def audit_events(runtime: Runtime, prefix: str = "") -> list[dict[str, Any]]:
    """The audit events whose type starts with `prefix`, in order, with `data` parsed."""
    with runtime.db.read_session() as session:
        rows = session.exec(
            select(AuditEvent).where(col(AuditEvent.event_type).startswith(prefix)).order_by(col(AuditEvent.id))
        ).all()
        return [
            {"event_type": row.event_type, "actor": row.actor, "data": json.loads(row.data_json), "raw": row.data_json}
            for row in rows
        ]
