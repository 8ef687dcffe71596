"""The action row: the source of truth for every tool call an agent submits."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from outbox.sqltypes import JSONColumn, UTCDateTime, utcnow


class ActionStatus(enum.StrEnum):
    RECEIVED = "received"
    DENIED = "denied"
    AWAITING_APPROVAL = "awaiting_approval"
    REJECTED = "rejected"
    EXPIRED = "expired"
    QUEUED = "queued"
    RUNNING = "running"
    DEFERRED = "deferred"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {
        ActionStatus.DENIED,
        ActionStatus.REJECTED,
        ActionStatus.EXPIRED,
        ActionStatus.SUCCEEDED,
        ActionStatus.FAILED,
        ActionStatus.CANCELLED,
    }
)
CANCELLABLE_STATUSES = frozenset({ActionStatus.QUEUED, ActionStatus.DEFERRED, ActionStatus.AWAITING_APPROVAL})


# None stored as SQL NULL, not JSON `null`: "no shadow decision" is then `shadow IS NULL`, which
# the shadow report filters on in SQL on both backends.
_SQL_NULL_JSON = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class Action(SQLModel, table=True):
    __tablename__ = "actions"
    __table_args__ = (
        Index("ix_actions_agent_created", "agent_id", "created_at", "id"),
        Index("ix_actions_status_not_before", "status", "not_before"),
    )

    id: str = Field(primary_key=True, max_length=40)
    agent_id: str = Field(foreign_key="agents.id", max_length=40)
    on_behalf_of: str | None = Field(default=None, max_length=320)
    tool: str = Field(max_length=200, index=True)
    args: dict[str, Any] = Field(sa_column=Column(JSONColumn, nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    idempotency_key: str = Field(max_length=255)
    status: str = Field(sa_column=Column(String(32), nullable=False))
    status_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))

    # The decision, exactly as made at submission.
    decision_effect: str = Field(max_length=16)
    decision_rules: list[Any] = Field(default_factory=list, sa_column=Column(JSONColumn, nullable=False))
    targets: list[Any] = Field(default_factory=list, sa_column=Column(JSONColumn, nullable=False))
    policy_version: str = Field(max_length=120)
    # The shadow policy's decision (migration 0008, docs/shadow-policy.md): {outcome, changes,
    # policy_version, live}; never enforced, shown to admins only. NULL without a shadow policy.
    shadow: dict[str, Any] | None = Field(default=None, sa_column=Column(_SQL_NULL_JSON, nullable=True))

    # The request exactly as received (method, path, selected headers, raw body).
    request: dict[str, Any] = Field(sa_column=Column(JSONColumn, nullable=False))
    # What was executed and what came back, exactly.
    artifact: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONColumn, nullable=True))
    response: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONColumn, nullable=True))
    preview: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONColumn, nullable=True))
    # Approvals (migration 0002): where to POST terminal states, and the problem+json document
    # explaining an outcome decided by a human or by expiry (rejected, expired).
    callback_url: str | None = Field(default=None, sa_column=Column(String(2048), nullable=True))
    problem: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONColumn, nullable=True))

    # Execution bookkeeping.
    attempts: int = 0
    not_before: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    lease_owner: str | None = Field(default=None, max_length=120)
    lease_expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    last_published_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))

    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True, index=True))
