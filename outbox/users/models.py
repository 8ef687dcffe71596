"""The people who sign in to the console, their server-side sessions, and failed sign-ins."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, Integer
from sqlmodel import Field, SQLModel

from outbox.sqltypes import UTCDateTime, utcnow


class Role(enum.StrEnum):
    # Decides on approval requests (what policy lets their identity approve).
    APPROVER = "approver"
    # Also pauses and resumes mail, and sees the operator pages.
    OPERATOR = "operator"


class User(SQLModel, table=True):
    """A person who may sign in: `user:<email>` to policy, the same identity the CLI's `--as` and
    Slack's linked identities resolve to."""

    __tablename__ = "users"

    id: str = Field(primary_key=True, max_length=40)
    # The canonical address (outbox.identities), without the `user:` prefix.
    email: str = Field(unique=True, max_length=200)
    role: str = Field(default=Role.APPROVER.value, max_length=16)
    # argon2id in PHC form; NULL for a person who signs in only through the proxy.
    password_hash: str | None = Field(default=None, max_length=255)
    disabled: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))


class ConsoleSession(SQLModel, table=True):
    """A signed-in browser. The cookie carries a random token; only its SHA-256 is stored, so a
    leaked table signs nobody in."""

    __tablename__ = "console_sessions"

    id: str = Field(primary_key=True, max_length=40)
    token_hash: str = Field(unique=True, max_length=64)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=40)
    csrf_token: str = Field(max_length=64)
    via: str = Field(max_length=16)  # password | proxy
    client_ip: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    # Indexed for the purge of expired rows.
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))


class LoginAttempt(SQLModel, table=True):
    """A failed (or not yet verified) password sign-in, counted per address and per client within
    the rate-limit window. Kept in the database so that every replica counts the same attempts."""

    __tablename__ = "console_login_attempts"
    __table_args__ = (
        Index("ix_console_login_attempts_email_created_at", "email", "created_at"),
        Index("ix_console_login_attempts_client_ip_created_at", "client_ip", "created_at"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    )
    # The canonical address, or the text as typed (folded, cut) when it is not an address.
    email: str = Field(max_length=200)
    client_ip: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
