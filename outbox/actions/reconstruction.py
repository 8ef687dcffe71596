"""Each action's state rebuilt from its audit events, compared with its row in `actions`.

The chain proves the events were not edited; this proves the rows agree with them. Only what the
events fully determine is compared:

- `status`: every status change goes through `actions.lifecycle.transition`, which records an
  event with `to_status` in the same transaction (the first, `received`, is recorded by
  submission), so the last such event names the status the row must have;
- `tool`, `args`, `on_behalf_of`: recorded in the `action.received` event exactly as stored, and
  never changed afterwards.

Other columns (lease, attempts, timestamps, the response) change without an event of their own
and are not compared. Every committed event counts, sealed or not (a row and its events commit
together; the chain's integrity is `verify_audit`'s part). One action's events are read in id
order, which is their commit order: each transition locks the action's row before its event is
inserted at commit, so a later transition's event always gets a higher id (and a later `seq`).
It lives with actions, above the audit core: `outbox audit verify` hands
`find_action_mismatches` to `outbox.audit.verification.verify_audit`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from outbox.actions.models import Action
from outbox.audit.models import AuditEvent
from outbox.audit.verification import ActionMismatch

RECEIVED_EVENT = "action.received"


def _shown(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= 160 else text[:157] + "..."


def same_json(left: Any, right: Any) -> bool:
    """Equal as JSON values. Numbers compare by value (PostgreSQL's JSONB writes 1e+20 back as
    100000000000000000000), but a boolean is never a number, unlike in Python."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same_json(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(same_json(a, b) for a, b in zip(left, right, strict=True))
    return type(left) is type(right) and left == right


def find_action_mismatches(session: Session, *, batch: int = 500) -> Iterator[ActionMismatch]:
    after = ""
    while True:
        rows = session.execute(
            select(col(Action.id), col(Action.status), col(Action.tool), col(Action.args), col(Action.on_behalf_of))
            .where(col(Action.id) > after)
            .order_by(col(Action.id))
            .limit(batch)
        ).all()
        if not rows:
            break
        after = rows[-1][0]
        received: dict[str, tuple[int | None, dict[str, Any]]] = {}
        status: dict[str, tuple[int | None, str]] = {}
        events = session.execute(
            select(
                col(AuditEvent.id),
                col(AuditEvent.action_id),
                col(AuditEvent.event_type),
                col(AuditEvent.to_status),
                col(AuditEvent.data_json),
            )
            .where(col(AuditEvent.action_id).in_([row[0] for row in rows]))
            .order_by(col(AuditEvent.id))
        ).all()
        for event_id, action_id, event_type, to_status, data_json in events:
            assert action_id is not None
            if event_type == RECEIVED_EVENT and action_id not in received:
                received[action_id] = (event_id, json.loads(data_json))
            if to_status is not None:
                status[action_id] = (event_id, to_status)
        for action_id, row_status, tool, args, on_behalf_of in rows:
            yield from _compare(action_id, row_status, tool, args, on_behalf_of, received, status)
    # A received action whose row is gone.
    orphans = session.execute(
        select(col(AuditEvent.id), col(AuditEvent.action_id))
        .where(
            (col(AuditEvent.event_type) == RECEIVED_EVENT)
            & col(AuditEvent.action_id).is_not(None)
            & col(AuditEvent.action_id).not_in(select(col(Action.id)))
        )
        .order_by(col(AuditEvent.id))
    ).all()
    for event_id, action_id in orphans:
        assert action_id is not None
        yield ActionMismatch(action_id, f"received (event {event_id}) but its row in actions is gone")


def _compare(
    action_id: str,
    row_status: str,
    tool: str,
    args: dict[str, Any],
    on_behalf_of: str | None,
    received: dict[str, tuple[int | None, dict[str, Any]]],
    status: dict[str, tuple[int | None, str]],
) -> Iterator[ActionMismatch]:
    if action_id not in received:
        yield ActionMismatch(action_id, "has a row in actions but no action.received event: it was not submitted")
        return
    received_id, data = received[action_id]
    if action_id in status and status[action_id][1] != row_status:
        event_id, expected = status[action_id]
        yield ActionMismatch(
            action_id,
            f"status is {row_status!r} in actions but {expected!r} by its events (last transition: event "
            f"{event_id}): the row was edited",
        )
    for name, value in (("tool", tool), ("args", args), ("on_behalf_of", on_behalf_of)):
        if not same_json(value, data.get(name)):
            yield ActionMismatch(
                action_id,
                f"{name} is {_shown(value)} in actions but {_shown(data.get(name))} in its action.received "
                f"event {received_id}: the row was edited",
            )
