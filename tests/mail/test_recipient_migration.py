"""Migration 0005 moves stored suppressions and today's per-recipient budget counters to recipient
keys, on SQLite and PostgreSQL: a mailbox suppressed or charged under one spelling before the
upgrade is suppressed, and has used its cap, under every spelling after it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, insert, select

from outbox.budgets.models import BudgetCounter
from outbox.budgets.service import window_start
from outbox.config import Settings
from outbox.mail.budgets.ledger import DAY, day_key
from outbox.mail.models import MailSuppression
from outbox.migrations import alembic_config, current, upgrade

SUB = "agents.mail.example.com"
REVISION = "0005"


def recipient_counter(address: str) -> str:
    return f"mail:{SUB}:recipient:{address}:day"


def test_stored_spellings_become_one_mailbox_and_todays_uses_add_up(empty_database: str) -> None:
    settings = Settings(database_url=empty_database)
    before = ScriptDirectory.from_config(alembic_config(settings)).get_revision(REVISION).down_revision
    assert isinstance(before, str)
    upgrade(settings, before)
    now = datetime.now(UTC)
    today, long_ago = window_start(now, DAY), window_start(now - timedelta(days=10), DAY)
    engine = create_engine(settings.database_url)
    suppressions, counters = MailSuppression.__table__, BudgetCounter.__table__  # type: ignore[attr-defined]
    with engine.begin() as connection:
        connection.execute(
            insert(suppressions),
            [
                {
                    "recipient": recipient,
                    "scope": scope,
                    "reason": reason,
                    "detail": None,
                    "source": "test",
                    "created_at": datetime(2026, 1, day, tzinfo=UTC),
                }
                for day, (recipient, scope, reason) in enumerate(
                    [
                        # Earlier code stored suppressions lower-cased (an IDN stayed a U-label)
                        # or, in older rows, as written.
                        ("erin@example.net", "*", "manual"),
                        ("Erin@Example.NET", "*", "hard_bounce"),
                        ("ERIN@EXAMPLE.NET", SUB, "unsubscribe"),
                        ("bob@exämple.net", SUB, "complaint"),
                        ("ann@example.net", "*", "manual"),
                        ("not an address", "*", "hard_bounce"),
                    ],
                    start=1,
                )
            ],
        )
        connection.execute(
            insert(counters),
            [
                {"key": recipient_counter("Erin@example.net"), "window_start": today, "used": 2},
                {"key": recipient_counter("erin@example.net"), "window_start": today, "used": 1},
                {"key": recipient_counter("ERIN@EXAMPLE.NET"), "window_start": today, "used": 1},
                {"key": recipient_counter("Zoe@Example.net"), "window_start": today, "used": 1},
                {"key": recipient_counter("Erin@example.net"), "window_start": long_ago, "used": 5},
                {"key": day_key(SUB), "window_start": today, "used": 9},
            ],
        )

    upgrade(settings, REVISION)

    with engine.connect() as connection:
        stored = {
            (row.recipient, row.scope): row.reason
            for row in connection.execute(select(suppressions.c.recipient, suppressions.c.scope, suppressions.c.reason))
        }
        used = {
            (row.key, row.window_start == today): row.used
            for row in connection.execute(select(counters.c.key, counters.c.window_start, counters.c.used))
        }
    assert stored == {
        ("erin@example.net", "*"): "manual",  # the older of two rows for one mailbox and scope
        ("erin@example.net", SUB): "unsubscribe",
        ("bob@xn--exmple-cua.net", SUB): "complaint",
        ("ann@example.net", "*"): "manual",
        ("not an address", "*"): "hard_bounce",  # matches no send; left as it was
    }
    assert used == {
        (recipient_counter("erin@example.net"), True): 4,
        (recipient_counter("zoe@example.net"), True): 1,
        # A window long closed is not rewritten: it can refuse nothing any more.
        (recipient_counter("Erin@example.net"), False): 5,
        (day_key(SUB), True): 9,
    }
    command.downgrade(alembic_config(settings), before)  # nothing to undo: keys are lower case
    upgrade(settings)
    assert current(settings) is not None
    engine.dispose()
