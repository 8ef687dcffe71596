"""Approval requests for actions that policy sends to a human."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from outbox.sqltypes import JSONColumn, UTCDateTime, utcnow


class ApprovalRequest(SQLModel, table=True):
    """Bound to a digest of exactly what will run; an approval counts only for that digest."""

    __tablename__ = "approval_requests"

    id: str = Field(primary_key=True, max_length=40)
    action_id: str = Field(foreign_key="actions.id", unique=True, max_length=40)
    digest: str = Field(max_length=64)
    status: str = Field(max_length=16)  # pending | approved | rejected | expired | cancelled
    rules: list[Any] = Field(default_factory=list, sa_column=Column(JSONColumn, nullable=False))
    quorum: int = 1
    decisions: list[Any] = Field(default_factory=list, sa_column=Column(JSONColumn, nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    decided_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
