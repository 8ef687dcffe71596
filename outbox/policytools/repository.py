"""What the database knows that policy analysis can use: agents, their roles, recorded calls."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from outbox.actions.models import Action
from outbox.agents.models import Agent
from outbox.agents.principals import principal


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One target of one recorded action, with who asked: a real decision to re-evaluate."""

    agent: str
    roles: tuple[str, ...]
    object: str
    act: str


def agents_and_roles(session: Session) -> list[tuple[str, tuple[str, ...]]]:
    """Every agent that is not revoked, as (`agent:<name>`, its roles)."""
    rows = session.exec(select(Agent.name, Agent.roles).where(col(Agent.revoked_at).is_(None))).all()
    return [(principal(name), tuple(roles or ())) for name, roles in rows]


def recorded_calls(session: Session, *, since: datetime | None = None, limit: int = 50_000) -> list[RecordedCall]:
    """Distinct (agent, roles, object, act) of the most recent actions, newest first."""
    query = (
        select(Agent.name, Agent.roles, Action.targets)
        .join(Agent, col(Agent.id) == col(Action.agent_id))
        .order_by(col(Action.created_at).desc())
        .limit(limit)
    )
    if since is not None:
        query = query.where(col(Action.created_at) >= since)
    seen: dict[tuple[str, tuple[str, ...], str, str], None] = {}
    for name, roles, targets in session.exec(query).all():
        for target in targets or ():
            if isinstance(target, dict) and "object" in target and "act" in target:
                key = (principal(name), tuple(roles or ()), str(target["object"]), str(target["act"]))
                seen.setdefault(key, None)
    return [RecordedCall(*key) for key in seen]
