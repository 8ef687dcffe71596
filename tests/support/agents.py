"""Creating agents through the real service."""

from __future__ import annotations

from outbox.agents.service import create_agent
from outbox.db import Database


def make_agent(db: Database, name: str, roles: list[str]) -> str:
    """Create an agent and return its API key."""
    with db.session() as session:
        _agent, key = create_agent(session, name, roles, actor="test")
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
