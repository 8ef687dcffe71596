"""mail: suppressions and per-recipient budget counters keyed by mailbox (recipient key)

Before this revision a suppression was stored in lower case (`Erin@Exämple.net` as
`erin@exämple.net`, not as the A-label) and a per-recipient budget counter under the address as
written (`Erin@example.net` and `erin@example.net` had one counter each). Both are now keyed by
`outbox.mail.addresses.recipient_key`. This revision rewrites stored rows to that key:

- `mail_suppressions`: a row whose recipient is not its key is moved to the key; where the key
  already has a row for the same scope, the older row is kept (either one suppresses).
- `budget_counters`: per-recipient daily counters of the windows that can still be open (the
  last two days) are merged into one counter per mailbox and window, their uses added up, so a
  mailbox that got two messages as `Erin@` and one as `erin@` today has used three, not one.

Rows whose recipient is not an address are left as they are: no send can match them.
Downgrade leaves the rows keyed: earlier code matched suppressions in lower case, which keys are.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

from outbox.mail.addresses import RecipientAddressError, recipient_key
from outbox.sqltypes import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_suppressions = sa.table(
    "mail_suppressions",
    sa.column("recipient", sa.String),
    sa.column("scope", sa.String),
    sa.column("created_at", UTCDateTime),
)
_counters = sa.table(
    "budget_counters",
    sa.column("key", sa.String),
    sa.column("window_start", UTCDateTime),
    sa.column("used", sa.Integer),
)
_RECIPIENT = ":recipient:"
_DAY = ":day"


def _key(address: str) -> str | None:
    try:
        return recipient_key(address.strip())
    except RecipientAddressError:
        return None


def _rekey_suppressions(connection: sa.Connection) -> None:
    rows = connection.execute(
        sa.select(_suppressions.c.recipient, _suppressions.c.scope, _suppressions.c.created_at).order_by(
            _suppressions.c.created_at, _suppressions.c.recipient
        )
    ).all()
    present = {(row.recipient, row.scope) for row in rows}
    for recipient, scope, _created in rows:
        key = _key(recipient)
        if key is None or key == recipient:
            continue
        where = sa.and_(_suppressions.c.recipient == recipient, _suppressions.c.scope == scope)
        if (key, scope) in present:  # an older row for this mailbox and scope stays
            connection.execute(sa.delete(_suppressions).where(where))
        else:
            connection.execute(sa.update(_suppressions).where(where).values(recipient=key))
            present.add((key, scope))
        present.discard((recipient, scope))


def _counter_key(key: str) -> str | None:
    """`mail:<subdomain>:recipient:<address>:day` with the address replaced by its key."""
    head, found, tail = key.partition(_RECIPIENT)
    if not found or not head.startswith("mail:") or not tail.endswith(_DAY):
        return None
    mailbox = _key(tail.removesuffix(_DAY))
    return None if mailbox is None else f"{head}{_RECIPIENT}{mailbox}{_DAY}"


def _merge_recipient_counters(connection: sa.Connection) -> None:
    since = datetime.now(UTC) - timedelta(days=2)
    rows = connection.execute(
        sa.select(_counters.c.key, _counters.c.window_start, _counters.c.used).where(
            _counters.c.key.like("mail:%:recipient:%:day"), _counters.c.window_start >= since
        )
    ).all()
    merged: dict[tuple[str, datetime], int] = {}
    moved: list[tuple[str, datetime]] = []
    for key, window_start, used in rows:
        target = _counter_key(key)
        if target is None:
            continue
        merged[(target, window_start)] = merged.get((target, window_start), 0) + int(used)
        if target != key:
            moved.append((key, window_start))
    if not moved:
        return
    for key, window_start in moved:
        connection.execute(
            sa.delete(_counters).where(_counters.c.key == key, _counters.c.window_start == window_start)
        )
    touched = {(_counter_key(key), window_start) for key, window_start in moved}
    for (key, window_start), used in merged.items():
        if (key, window_start) not in touched:
            continue
        where = sa.and_(_counters.c.key == key, _counters.c.window_start == window_start)
        if connection.execute(sa.update(_counters).where(where).values(used=used)).rowcount == 0:
            connection.execute(sa.insert(_counters).values(key=key, window_start=window_start, used=used))


def upgrade() -> None:
    connection = op.get_bind()
    _rekey_suppressions(connection)
    _merge_recipient_counters(connection)


def downgrade() -> None:
    """Nothing to undo: keyed rows are what the earlier code looked suppressions up by."""
