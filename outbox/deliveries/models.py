"""The durable queue of outbound calls (Slack messages, agent callbacks)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, String, Text
from sqlmodel import Field, SQLModel

from outbox.sqltypes import JSONColumn, UTCDateTime, utcnow


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    DEAD = "dead"


class Delivery(SQLModel, table=True):
    """One outbound call to make (a Slack API call, an agent callback), made durably.

    Rows are written in the transaction that causes them and processed afterwards, by the
    request that caused them, the embedded sweeper or a Celery task: whoever takes the lease.
    Failures are retried with backoff (Slack's Retry-After honoured) until `max_attempts`.
    `pending_key` coalesces work on one subject (one Slack message) while it is pending; a new
    change bumps `generation`, so a delivery in flight that rendered an older state runs again.
    """

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_state_not_before", "state", "not_before"),)

    id: str = Field(primary_key=True, max_length=40)
    kind: str = Field(max_length=40)
    subject_id: str = Field(max_length=40, index=True)
    pending_key: str | None = Field(default=None, sa_column=Column(String(120), unique=True, nullable=True))
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONColumn, nullable=False))
    state: str = Field(max_length=16)  # DeliveryState
    generation: int = 1
    attempts: int = 0
    not_before: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    lease_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    done_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
