"""audit sealing off the hot path: events get a chain position (`seq`), links are set by the sealer

Requests now insert their audit events unsealed (`seq`, `prev_hash` and `hash` NULL); the sealer
(outbox/audit/sealer.py) assigns all three shortly after commit. Chain order is `seq` order.

Existing rows were chained at commit in id order, so numbering them by id (`seq` = row_number()
over id) keeps every stored hash and every signed checkpoint valid: a checkpoint's `event_count`
is the position, in id order until now, of its `last_event_id`.

Downgrade refuses when an event is still unsealed or when the chain is no longer in id order
(on PostgreSQL a transaction that commits late is sealed after events with higher ids), because
the previous revision's code verifies the chain in id order and would report a break there.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# PostgreSQL's own name for a UNIQUE column constraint, so that the schema is the one the model
# (`Column(unique=True)`) describes on either path.
_SEQ_UNIQUE = "audit_events_seq_key"
_UNSEALED_INDEX = "ix_audit_events_unsealed"
_HASH = sqlmodel.sql.sqltypes.AutoString(length=64)
_events = sa.table(
    "audit_events",
    sa.column("id", sa.BigInteger),
    sa.column("seq", sa.BigInteger),
)


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.alter_column("prev_hash", existing_type=_HASH, nullable=True)
        batch_op.alter_column("hash", existing_type=_HASH, nullable=True)
    numbered = sa.select(_events.c.id, sa.func.row_number().over(order_by=_events.c.id).label("position")).subquery()
    # UPDATE ... FROM: PostgreSQL, and SQLite since 3.33.
    op.execute(sa.update(_events).values(seq=numbered.c.position).where(_events.c.id == numbered.c.id))
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_unique_constraint(_SEQ_UNIQUE, ["seq"])
    # What the sealer reads every turn: the few unsealed rows, by id (empty right after backfill).
    op.create_index(
        _UNSEALED_INDEX,
        "audit_events",
        ["id"],
        postgresql_where=sa.text("seq IS NULL"),
        sqlite_where=sa.text("seq IS NULL"),
    )


def downgrade() -> None:
    connection = op.get_bind()
    unsealed = connection.execute(sa.select(sa.func.count()).select_from(_events).where(_events.c.seq.is_(None)))
    if unsealed.scalar_one():
        raise RuntimeError(
            "audit events are still unsealed: run `outbox audit verify` (it seals them) with every "
            "process stopped, then downgrade"
        )
    previous = sa.func.lag(_events.c.seq).over(order_by=_events.c.id)
    ordered = sa.select(_events.c.seq, previous.label("previous")).subquery()
    if connection.execute(
        sa.select(sa.func.count()).select_from(ordered).where(ordered.c.previous > ordered.c.seq)
    ).scalar_one():
        raise RuntimeError(
            "the audit chain is not in id order (events committed late were sealed after later ids): "
            "the previous revision verifies in id order and would report it broken; not downgrading"
        )
    op.drop_index(_UNSEALED_INDEX, table_name="audit_events")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_constraint(_SEQ_UNIQUE, type_="unique")
        batch_op.drop_column("seq")
        batch_op.alter_column("prev_hash", existing_type=_HASH, nullable=False)
        batch_op.alter_column("hash", existing_type=_HASH, nullable=False)
