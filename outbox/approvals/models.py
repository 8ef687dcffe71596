"""Approval requests and the decisions humans make on them. (The durable queue of Slack messages
and callbacks that tell people and agents what happened is outbox/deliveries/.)"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from outbox.sqltypes import JSONColumn, UTCDateTime, utcnow


class ApprovalStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class ApprovalRequest(SQLModel, table=True):
    """Bound to a digest of exactly what will run; an approval counts only for that digest."""

    __tablename__ = "approval_requests"

    id: str = Field(primary_key=True, max_length=40)
    action_id: str = Field(foreign_key="actions.id", unique=True, max_length=40)
    digest: str = Field(max_length=64)
    status: str = Field(max_length=16)  # ApprovalStatus
    # The policy lines (and escalations) that demanded a human.
    rules: list[Any] = Field(default_factory=list, sa_column=Column(JSONColumn, nullable=False))
    quorum: int = 1
    # The policy version and targets the digest binds, kept so the digest can be recomputed.
    policy_version: str = Field(default="", max_length=120)
    requested_by: str = Field(default="", max_length=200)
    bound_targets: list[Any] = Field(default_factory=list, sa_column=Column(JSONColumn, nullable=False))
    # Which approvals.yaml gate applied (quorum, expiry, channel and the lines they came from).
    gate: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONColumn, nullable=False))
    # The deciding reason (a denial's reason, "expired", ...).
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    decided_by: str | None = Field(default=None, max_length=320)
    # Whether the human who rejected the call thinks a changed call may be asked again.
    may_resubmit: bool | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    decided_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    # Set when the approved action first runs: an approval authorises one action, once.
    consumed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))

    # Slack: where the request was posted, and which action status the message last showed.
    slack_channel: str | None = Field(default=None, max_length=100)
    slack_channel_id: str | None = Field(default=None, max_length=40)
    slack_ts: str | None = Field(default=None, max_length=40)
    slack_rendered_status: str | None = Field(default=None, max_length=32)


class ApprovalDecision(SQLModel, table=True):
    """One human's approve or deny. One per approver per request: double clicks count once."""

    __tablename__ = "approval_decisions"
    __table_args__ = (UniqueConstraint("approval_id", "approver", name="uq_approval_decision_approver"),)

    id: str = Field(primary_key=True, max_length=40)
    approval_id: str = Field(foreign_key="approval_requests.id", index=True, max_length=40)
    approver: str = Field(max_length=320)
    verdict: str = Field(max_length=16)  # approve | deny
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The digest the approver was shown; a decision counts only for the request's digest.
    digest: str = Field(max_length=64)
    via: str = Field(max_length=16)  # slack | cli | api
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
