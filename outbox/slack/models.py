"""What the Slack edge must remember across requests and replicas."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from outbox.sqltypes import UTCDateTime, utcnow


class SlackSeenRequest(SQLModel, table=True):
    """A signed request (or one interaction) already handled.

    Signatures are only valid for five minutes, so rows older than that are purged: a replay of
    an old request fails the timestamp check instead.
    """

    __tablename__ = "slack_seen_requests"

    key: str = Field(primary_key=True, max_length=80)
    seen_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False, index=True))
