"""Append-only audit events, hash-chained in `seq` order once sealed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, Integer, Text, text
from sqlmodel import Field, SQLModel

from outbox.sqltypes import UTCDateTime, utcnow


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_events"
    # The events waiting for the sealer, by id: what it reads every turn, without scanning the
    # chain (a partial index holds only the few unsealed rows).
    __table_args__ = (
        Index(
            "ix_audit_events_unsealed",
            "id",
            postgresql_where=text("seq IS NULL"),
            sqlite_where=text("seq IS NULL"),
        ),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    )
    action_id: str | None = Field(default=None, max_length=40, index=True)
    event_type: str = Field(max_length=64)
    actor: str = Field(max_length=200)
    from_status: str | None = Field(default=None, max_length=32)
    to_status: str | None = Field(default=None, max_length=32)
    # Stored as the exact canonical JSON text that was hashed, so verification never depends on
    # how a backend normalises JSON (JSONB rewrites numbers and key order).
    data_json: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    # The chain position (1, 2, 3, ...) and the links, set together by the sealer
    # (outbox/audit/sealer.py) shortly after the event commits; NULL until then. Chain order is
    # `seq` order, which need not be `id` order (docs/audit.md).
    seq: int | None = Field(default=None, sa_column=Column(BigInteger, unique=True, nullable=True))
    prev_hash: str | None = Field(default=None, max_length=64)
    hash: str | None = Field(default=None, max_length=64, unique=True)


class AuditCheckpoint(SQLModel, table=True):
    """Bookkeeping of the checkpoints written to the sinks: which one was last, so that every
    process continues one checkpoint chain. It is not the anchor (the database writer could
    rewrite it); the signed lines in the sinks are. Tampering with it only shows as a break in
    the sinks' chain."""

    __tablename__ = "audit_checkpoints"

    seq: int = Field(sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    event_count: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_event_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_hash: str = Field(max_length=64)
    # SHA-256 of the checkpoint's RFC 8785 form: the next checkpoint's `prev`.
    digest: str = Field(max_length=64)
    # The signed line exactly as written to the sinks.
    line: str = Field(sa_column=Column(Text, nullable=False))
