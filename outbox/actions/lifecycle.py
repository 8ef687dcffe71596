"""State transitions: a conditional update plus its audit event, in one transaction.

A transition names the states it may leave. If the row is no longer in one of them (another
worker claimed it, the agent cancelled it), nothing changes and the caller learns so: this is
what makes a second delivery of the same message, or a race between cancel and claim, harmless.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from outbox.actions.models import Action, ActionStatus
from outbox.audit.service import record_event
from outbox.sqltypes import utcnow


def transition(
    session: Session,
    action_id: str,
    *,
    from_statuses: Iterable[ActionStatus],
    to_status: ActionStatus,
    actor: str,
    event_type: str | None = None,
    data: dict[str, Any] | None = None,
    extra_condition: Any = None,
    **values: Any,
) -> bool:
    """Move an action to `to_status` if it is in one of `from_statuses`. Returns whether it moved."""
    allowed = {s.value for s in from_statuses}
    now = utcnow()
    if to_status.is_terminal:
        values.setdefault("finished_at", now)
    # Lock the row and learn the state it leaves (FOR UPDATE on PostgreSQL; on SQLite the
    # transaction already holds the database write lock).
    query = select(Action.status).where(col(Action.id) == action_id).with_for_update()
    if extra_condition is not None:
        query = query.where(extra_condition)
    previous = session.exec(query).first()
    if previous is None or previous not in allowed:
        return False
    session.execute(
        update(Action)
        .where((col(Action.id) == action_id) & (col(Action.status) == previous))
        .values(status=to_status.value, updated_at=now, **values)
    )
    record_event(
        session,
        event_type=event_type or f"action.{to_status.value}",
        actor=actor,
        action_id=action_id,
        from_status=previous,
        to_status=to_status.value,
        data=data,
    )
    return True
