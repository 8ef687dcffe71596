"""State transitions: a conditional update plus its audit event, in one transaction.

A transition names the states it may leave. If the row is no longer in one of them (another
worker claimed it, the agent cancelled it), nothing changes and the caller learns so: this is
what makes a second delivery of the same message, or a race between cancel and claim, harmless.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlmodel import Session

from outbox.actions import repository
from outbox.actions.models import ActionStatus
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
    # Lock the row and learn the state it leaves.
    previous = repository.lock_status(session, action_id, extra_condition=extra_condition)
    if previous is None or previous not in allowed:
        return False
    repository.set_status(session, action_id, previous=previous, to_status=to_status.value, updated_at=now, **values)
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
