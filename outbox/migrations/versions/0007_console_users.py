"""console users: people who sign in to the web console, their sessions, failed sign-ins

`users` holds `user:<email>` identities (canonical address, role, argon2 hash, disabled);
`console_sessions` the SHA-256 of each session cookie with its CSRF token and expiry;
`console_login_attempts` the failed password sign-ins the rate limit counts (per address and per
client address), shared by every replica.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

import outbox.sqltypes

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(length: int) -> AutoString:
    return AutoString(length=length)


def _utc() -> outbox.sqltypes.UTCDateTime:
    return outbox.sqltypes.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", _text(40), nullable=False),
        sa.Column("email", _text(200), nullable=False),
        sa.Column("role", _text(16), nullable=False),
        sa.Column("password_hash", _text(255), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )
    op.create_table(
        "console_sessions",
        sa.Column("id", _text(40), nullable=False),
        sa.Column("token_hash", _text(64), nullable=False),
        sa.Column("user_id", _text(40), nullable=False),
        sa.Column("csrf_token", _text(64), nullable=False),
        sa.Column("via", _text(16), nullable=False),
        sa.Column("client_ip", _text(64), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("expires_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_console_sessions_user_id"), ["user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_console_sessions_expires_at"), ["expires_at"], unique=False)
    op.create_table(
        "console_login_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("email", _text(200), nullable=False),
        sa.Column("client_ip", _text(64), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("console_login_attempts", schema=None) as batch_op:
        batch_op.create_index("ix_console_login_attempts_email_created_at", ["email", "created_at"], unique=False)
        batch_op.create_index(
            "ix_console_login_attempts_client_ip_created_at", ["client_ip", "created_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("console_login_attempts")
    op.drop_table("console_sessions")
    op.drop_table("users")
