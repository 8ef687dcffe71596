"""mail: per-recipient deliveries, suppressions, pauses, feedback events, subdomain state

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

import outbox.sqltypes

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:  # type: ignore[type-arg]
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # Clearer whole: a migration is its schema change as one ordered list of statements,
    # read against the models and never edited once released.
    op.create_table(
        "mail_deliveries",
        sa.Column("action_id", sa.String(length=40), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("subdomain", sqlmodel.sql.sqltypes.AutoString(length=253), nullable=False),
        sa.Column("agent_name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("message_id", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("charged_at", outbox.sqltypes.UTCDateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("code", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("stage", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("at", outbox.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("action_id", "recipient"),
    )
    with op.batch_alter_table("mail_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_mail_deliveries_message_id", ["message_id"], unique=False)
        batch_op.create_index("ix_mail_deliveries_subdomain_at", ["subdomain", "at"], unique=False)

    op.create_table(
        "mail_feedback_events",
        sa.Column("event_id", sa.String(length=240), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("recipient", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("subdomain", sqlmodel.sql.sqltypes.AutoString(length=253), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("action_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("detail", _json(), nullable=False),
        sa.Column("occurred_at", outbox.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.Column("received_at", outbox.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    with op.batch_alter_table("mail_feedback_events", schema=None) as batch_op:
        batch_op.create_index("ix_mail_feedback_subdomain_received", ["subdomain", "received_at"], unique=False)

    op.create_table(
        "mail_pauses",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=253), nullable=False),
        sa.Column("cause", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("paused_by", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("paused_at", outbox.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "target"),
    )
    op.create_table(
        "mail_subdomain_state",
        sa.Column("subdomain", sa.String(length=253), nullable=False),
        sa.Column("breaker_since", outbox.sqltypes.UTCDateTime(timezone=True), nullable=True),
        sa.Column("dns_ok", sa.Boolean(), nullable=True),
        sa.Column("dns_reason", sa.Text(), nullable=True),
        sa.Column("dns_report", _json(), nullable=True),
        sa.Column("dns_checked_at", outbox.sqltypes.UTCDateTime(timezone=True), nullable=True),
        sa.Column("dns_claimed_at", outbox.sqltypes.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("subdomain"),
    )
    op.create_table(
        "mail_suppressions",
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("scope", sa.String(length=253), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("created_at", outbox.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("recipient", "scope"),
    )


def downgrade() -> None:
    op.drop_table("mail_suppressions")
    op.drop_table("mail_subdomain_state")
    op.drop_table("mail_pauses")
    with op.batch_alter_table("mail_feedback_events", schema=None) as batch_op:
        batch_op.drop_index("ix_mail_feedback_subdomain_received")
    op.drop_table("mail_feedback_events")
    with op.batch_alter_table("mail_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_mail_deliveries_subdomain_at")
        batch_op.drop_index("ix_mail_deliveries_message_id")
    op.drop_table("mail_deliveries")
