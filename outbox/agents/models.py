"""Agents and their API keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, String
from sqlmodel import Field, SQLModel

from outbox.sqltypes import JSONColumn, UTCDateTime, utcnow


class Agent(SQLModel, table=True):
    __tablename__ = "agents"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(sa_column=Column(String(100), unique=True, nullable=False))
    roles: list[str] = Field(default_factory=list, sa_column=Column(JSONColumn, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))


class ApiKey(SQLModel, table=True):
    """An agent's credential. Only the SHA-256 of the key is stored.

    Keys are 256-bit random secrets, so a fast hash is enough: there is nothing to brute-force.
    """

    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=40)
    agent_id: str = Field(foreign_key="agents.id", index=True, max_length=40)
    key_hash: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    # The first characters of the key, to tell keys apart in listings without revealing them.
    display_prefix: str = Field(max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
