"""approvals: decisions, bound digests, Slack message state, deliveries, callbacks

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

import outbox.sqltypes

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:  # type: ignore[type-arg]
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # Clearer whole: a migration is its schema change as one ordered list of statements,
    # read against the models and never edited once released.
    op.create_table(
        "deliveries",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("subject_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("pending_key", sa.String(length=120), nullable=True),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", outbox.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lease_until", outbox.sqltypes.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", outbox.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", outbox.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.Column("done_at", outbox.sqltypes.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pending_key"),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_state_not_before", ["state", "not_before"], unique=False)
        batch_op.create_index(batch_op.f("ix_deliveries_subject_id"), ["subject_id"], unique=False)

    op.create_table(
        "slack_seen_requests",
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column("seen_at", outbox.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("slack_seen_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_slack_seen_requests_seen_at"), ["seen_at"], unique=False)

    op.create_table(
        "approval_decisions",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("approval_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("approver", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("verdict", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("digest", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("via", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", outbox.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["approval_id"], ["approval_requests.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("approval_id", "approver", name="uq_approval_decision_approver"),
    )
    with op.batch_alter_table("approval_decisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_approval_decisions_approval_id"), ["approval_id"], unique=False)

    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("callback_url", sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column("problem", _json(), nullable=True))
        batch_op.create_index(batch_op.f("ix_actions_finished_at"), ["finished_at"], unique=False)

    # Server defaults fill the rows written before this revision; new rows always set them.
    with op.batch_alter_table("approval_requests", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "policy_version",
                sqlmodel.sql.sqltypes.AutoString(length=120),
                nullable=False,
                server_default=sa.text("''"),
            )
        )
        batch_op.add_column(
            sa.Column(
                "requested_by",
                sqlmodel.sql.sqltypes.AutoString(length=200),
                nullable=False,
                server_default=sa.text("''"),
            )
        )
        batch_op.add_column(sa.Column("bound_targets", _json(), nullable=False, server_default=sa.text("'[]'")))
        batch_op.add_column(sa.Column("gate", _json(), nullable=False, server_default=sa.text("'{}'")))
        batch_op.add_column(sa.Column("decided_by", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True))
        batch_op.add_column(sa.Column("may_resubmit", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("consumed_at", outbox.sqltypes.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("slack_channel", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True))
        batch_op.add_column(sa.Column("slack_channel_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True))
        batch_op.add_column(sa.Column("slack_ts", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True))
        batch_op.add_column(
            sa.Column("slack_rendered_status", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True)
        )
        # Decisions now live in approval_decisions, one row per approver (unique), which is what
        # makes double clicks and concurrent approvals count once.
        batch_op.drop_column("decisions")


def downgrade() -> None:
    with op.batch_alter_table("approval_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("decisions", _json(), nullable=False, server_default=sa.text("'[]'")))
        for column in (
            "slack_rendered_status",
            "slack_ts",
            "slack_channel_id",
            "slack_channel",
            "consumed_at",
            "may_resubmit",
            "decided_by",
            "gate",
            "bound_targets",
            "requested_by",
            "policy_version",
        ):
            batch_op.drop_column(column)

    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_actions_finished_at"))
        batch_op.drop_column("problem")
        batch_op.drop_column("callback_url")

    with op.batch_alter_table("approval_decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_approval_decisions_approval_id"))
    op.drop_table("approval_decisions")

    with op.batch_alter_table("slack_seen_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_slack_seen_requests_seen_at"))
    op.drop_table("slack_seen_requests")

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_subject_id"))
        batch_op.drop_index("ix_deliveries_state_not_before")
    op.drop_table("deliveries")
