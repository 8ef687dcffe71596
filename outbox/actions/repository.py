"""Every SQL statement on the actions table. Callers own the transaction (`Database.session()`)
and the rules: who may see an action, which transitions are allowed, what a page is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert as insert_statement
from sqlalchemy import update
from sqlmodel import Session, col, select

from outbox.actions.models import Action


def insert(session: Session, columns: Mapping[str, Any]) -> None:
    """Insert the row now, from every column's value, with one statement built once (the
    submission hot path: no ORM object, unit of work or refresh)."""
    session.connection().execute(_INSERT, columns)


_INSERT = insert_statement(Action.__table__)  # type: ignore[attr-defined]


def save(session: Session, action: Action) -> None:
    """Keep the changes made to a loaded action; they are written with the transaction."""
    session.add(action)


def get(session: Session, action_id: str) -> Action | None:
    return session.get(Action, action_id)


def newest_first(
    session: Session,
    agent_id: str,
    *,
    status: str | None,
    tool: str | None,
    before: tuple[datetime, str] | None,
    limit: int,
) -> Sequence[Action]:
    """Up to `limit` of the agent's actions, newest first (ties broken by id), optionally
    filtered, and only those strictly after `before` (created_at, id) in that order."""
    query = select(Action).where(col(Action.agent_id) == agent_id)
    if status is not None:
        query = query.where(col(Action.status) == status)
    if tool is not None:
        query = query.where(col(Action.tool) == tool)
    if before is not None:
        created_at, after_id = before
        query = query.where(
            (col(Action.created_at) < created_at)
            | ((col(Action.created_at) == created_at) & (col(Action.id) < after_id))
        )
    return session.exec(query.order_by(col(Action.created_at).desc(), col(Action.id).desc()).limit(limit)).all()


def lock_status(session: Session, action_id: str, *, extra_condition: Any = None) -> str | None:
    """The action's status, with its row locked for the rest of the transaction (FOR UPDATE on
    PostgreSQL; on SQLite the transaction already holds the database write lock). None if there
    is no such action, or it does not meet `extra_condition`."""
    query = select(Action.status).where(col(Action.id) == action_id).with_for_update()
    if extra_condition is not None:
        query = query.where(extra_condition)
    return session.exec(query).first()


def set_status(session: Session, action_id: str, *, previous: str, to_status: str, **values: Any) -> None:
    """Move the action from `previous` (the status read under lock) to `to_status`, with the
    other column values given."""
    session.execute(
        update(Action)
        .where((col(Action.id) == action_id) & (col(Action.status) == previous))
        .values(status=to_status, **values)
    )
