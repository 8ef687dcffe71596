"""Every SQL query of the operators' pages. Read-only: the pages change state only through the
services the API and CLI use (mail pauses, audit events). Callers own the session."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as select_columns
from sqlmodel import Session, col, select

from outbox.actions.models import Action
from outbox.agents.models import Agent
from outbox.audit.models import AuditCheckpoint, AuditEvent
from outbox.budgets.models import BudgetCounter


@dataclass(frozen=True, slots=True)
class ActionFilters:
    """What the actions list is narrowed to; None means any."""

    agent: str | None = None
    tool: str | None = None
    status: str | None = None
    on_behalf_of: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


@dataclass(frozen=True, slots=True)
class ActionRow:
    """One line of the actions list: the columns it shows, not the recorded bodies."""

    id: str
    agent_name: str
    tool: str
    status: str
    on_behalf_of: str | None
    decision_effect: str
    policy_version: str
    status_reason: str | None
    created_at: datetime
    finished_at: datetime | None


_LIST_COLUMNS = (
    col(Action.id),
    col(Agent.name),
    col(Action.tool),
    col(Action.status),
    col(Action.on_behalf_of),
    col(Action.decision_effect),
    col(Action.policy_version),
    col(Action.status_reason),
    col(Action.created_at),
    col(Action.finished_at),
)


def search_actions(
    session: Session, filters: ActionFilters, *, before: tuple[datetime, str] | None, limit: int
) -> list[ActionRow]:
    """Up to `limit` actions matching `filters`, newest first (ties broken by id), only those
    strictly after `before` (created_at, id) in that order: keyset pages stay stable while new
    actions arrive."""
    query: Any = select_columns(*_LIST_COLUMNS).join(Agent, col(Agent.id) == col(Action.agent_id))
    if filters.agent is not None:
        query = query.where(col(Agent.name) == filters.agent)
    if filters.tool is not None:
        query = query.where(col(Action.tool) == filters.tool)
    if filters.status is not None:
        query = query.where(col(Action.status) == filters.status)
    if filters.on_behalf_of is not None:
        query = query.where(col(Action.on_behalf_of) == filters.on_behalf_of)
    if filters.created_from is not None:
        query = query.where(col(Action.created_at) >= filters.created_from)
    if filters.created_to is not None:
        query = query.where(col(Action.created_at) < filters.created_to)
    if before is not None:
        created_at, before_id = before
        query = query.where(
            (col(Action.created_at) < created_at)
            | ((col(Action.created_at) == created_at) & (col(Action.id) < before_id))
        )
    query = query.order_by(col(Action.created_at).desc(), col(Action.id).desc()).limit(limit)
    return [ActionRow(*row) for row in session.execute(query).all()]


def action_with_agent(session: Session, action_id: str) -> tuple[Action, str] | None:
    """The action and its agent's name."""
    row = session.exec(
        select(Action, Agent.name).join(Agent, col(Agent.id) == col(Action.agent_id)).where(col(Action.id) == action_id)
    ).first()
    return None if row is None else (row[0], row[1])


def events_of_action(session: Session, action_id: str) -> Sequence[AuditEvent]:
    """The action's audit events in commit order (id order: each transition locks the action's
    row before its event is inserted, outbox/actions/reconstruction.py), sealed or not yet."""
    return session.exec(
        select(AuditEvent).where(col(AuditEvent.action_id) == action_id).order_by(col(AuditEvent.id))
    ).all()


def agent_names(session: Session) -> list[str]:
    return list(session.exec(select(Agent.name).order_by(col(Agent.name))).all())


@dataclass(frozen=True, slots=True)
class VersionUse:
    """How many actions one policy version decided in a period, and when first and last."""

    version: str
    actions: int
    first_at: datetime
    last_at: datetime


def policy_versions_since(session: Session, since: datetime) -> list[VersionUse]:
    """The policy versions that decided the actions created since `since`, most recent first.
    Every replica records the version it decided with, so this shows the versions other
    replicas ran as well as this one's earlier loads."""
    rows = session.execute(
        select(
            col(Action.policy_version),
            func.count(),
            func.min(col(Action.created_at)),
            func.max(col(Action.created_at)),
        )
        .where(col(Action.created_at) >= since)
        .group_by(col(Action.policy_version))
        .order_by(func.max(col(Action.created_at)).desc())
    ).all()
    return [VersionUse(str(version), int(count), first, last) for version, count, first, last in rows]


def counter_windows(session: Session, key: str, since: datetime) -> dict[datetime, int]:
    """Units used per window of one budget counter (`outbox.budgets`), for windows starting at
    or after `since`. Windows nothing was charged in have no row."""
    rows = session.execute(
        select(col(BudgetCounter.window_start), col(BudgetCounter.used)).where(
            col(BudgetCounter.key) == key, col(BudgetCounter.window_start) >= since
        )
    ).all()
    return {start: int(used) for start, used in rows}


def latest_checkpoint(session: Session) -> AuditCheckpoint | None:
    """The newest checkpoint the database records as written to the sinks (bookkeeping, not the
    anchor: `outbox audit verify` checks the signed lines)."""
    return session.exec(select(AuditCheckpoint).order_by(col(AuditCheckpoint.seq).desc()).limit(1)).first()


@dataclass(frozen=True, slots=True)
class ChainHead:
    sealed: int
    last_sealed_at: datetime | None


def chain_head(session: Session) -> ChainHead:
    """How many events are chained and when the newest of them was written."""
    row = session.exec(
        select(AuditEvent.seq, AuditEvent.created_at)
        .where(col(AuditEvent.seq).is_not(None))
        .order_by(col(AuditEvent.seq).desc())
        .limit(1)
    ).first()
    if row is None:
        return ChainHead(0, None)
    return ChainHead(int(row[0] or 0), row[1])
