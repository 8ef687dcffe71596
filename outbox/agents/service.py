"""Creating, listing, revoking and authenticating agents."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, bindparam
from sqlalchemy import select as select_columns
from sqlmodel import Session, col, select

from outbox.agents.models import Agent, ApiKey
from outbox.agents.principals import principal
from outbox.audit.service import record_event
from outbox.sqltypes import new_id, utcnow

KEY_PREFIX = "obx_"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_ROLE = re.compile(r"^[a-z0-9][a-z0-9._:-]{0,62}$")


class AgentError(ValueError):
    """A refused agent operation, with a message fit for the CLI."""


@dataclass(frozen=True, slots=True)
class AuthenticatedAgent:
    id: str
    name: str
    roles: tuple[str, ...]

    @property
    def principal(self) -> str:
        return principal(self.name)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def normalise_role(role: str) -> str:
    role = role.strip().lower()
    if role.startswith("role:"):
        role = role.removeprefix("role:")
    if not _ROLE.match(role):
        raise AgentError(f"invalid role {role!r}: use lower-case letters, digits, '.', '_', '-', ':'")
    return f"role:{role}"


def create_agent(session: Session, name: str, roles: list[str], *, actor: str) -> tuple[Agent, str]:
    """Create an agent and its first API key. The key is returned once and stored hashed."""
    if not _NAME.match(name):
        raise AgentError(f"invalid agent name {name!r}: 1-63 lower-case letters, digits, '.', '_' or '-'")
    if session.exec(select(Agent).where(Agent.name == name)).first() is not None:
        raise AgentError(f"an agent named {name!r} already exists (names are never reused)")
    agent = Agent(id=new_id("agt"), name=name, roles=sorted({normalise_role(r) for r in roles}))
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(agent)
    session.flush()
    session.add(ApiKey(id=new_id("key"), agent_id=agent.id, key_hash=hash_key(key), display_prefix=key[:10]))
    record_event(
        session,
        event_type="agent.created",
        actor=actor,
        data={"agent": name, "roles": agent.roles},
    )
    return agent, key


def list_agents(session: Session) -> list[tuple[Agent, list[ApiKey]]]:
    agents = session.exec(select(Agent).order_by(col(Agent.name))).all()
    keys = session.exec(select(ApiKey)).all()
    by_agent: dict[str, list[ApiKey]] = {}
    for key in keys:
        by_agent.setdefault(key.agent_id, []).append(key)
    return [(agent, by_agent.get(agent.id, [])) for agent in agents]


def revoke_agent(session: Session, name: str, *, actor: str) -> Agent:
    agent = session.exec(select(Agent).where(Agent.name == name)).first()
    if agent is None:
        raise AgentError(f"no agent named {name!r}")
    if agent.revoked_at is not None:
        return agent
    now = utcnow()
    agent.revoked_at = now
    for key in session.exec(select(ApiKey).where(ApiKey.agent_id == agent.id)).all():
        if key.revoked_at is None:
            key.revoked_at = now
            session.add(key)
    session.add(agent)
    record_event(session, event_type="agent.revoked", actor=actor, data={"agent": name})
    return agent


def authenticate(session: Session | Connection, key: str) -> AuthenticatedAgent | None:
    """The agent a key belongs to, or None for an unknown or revoked key. Never cached."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    row = session.execute(_AUTHENTICATE, {"key_hash": hash_key(key)}).first()
    if row is None:
        return None
    return AuthenticatedAgent(row.id, row.name, tuple(row.roles))


def _authenticate_statement() -> Select[Any]:
    agents, keys = Agent.__table__, ApiKey.__table__  # type: ignore[attr-defined]
    return (
        select_columns(agents.c.id, agents.c.name, agents.c.roles)
        .select_from(agents.join(keys, keys.c.agent_id == agents.c.id))
        .where((keys.c.key_hash == bindparam("key_hash")) & agents.c.revoked_at.is_(None) & keys.c.revoked_at.is_(None))
    )


# Built once: this runs on every agent request, and building a statement costs more than running it.
_AUTHENTICATE = _authenticate_statement()
