"""Shared counters behind every budget and rate limit.

They live in the database, not in Redis, so that budget state survives the loss of any process
and of the broker; every worker charges the same rows with conditional updates.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, String
from sqlmodel import Field, SQLModel

from outbox.sqltypes import UTCDateTime


class BudgetCounter(SQLModel, table=True):
    """How much of a fixed window's cap has been used."""

    __tablename__ = "budget_counters"

    key: str = Field(sa_column=Column(String(400), primary_key=True))
    window_start: datetime = Field(sa_column=Column(UTCDateTime, primary_key=True))
    used: int = 0


class ConcurrencySlot(SQLModel, table=True):
    """A lease on one of N slots for work that may only run N at a time (per host, say): one row
    per running holder, deleted on release, ignored (and deleted) once expired.

    `holder` and `expires_at` are nullable because earlier versions pre-inserted N free rows
    per key; the current code deletes such rows when it meets them."""

    __tablename__ = "concurrency_slots"

    key: str = Field(sa_column=Column(String(400), primary_key=True))
    slot: int = Field(primary_key=True)
    holder: str | None = Field(default=None, max_length=120)
    expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
