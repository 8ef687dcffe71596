"""Submitting actions through the real service, without HTTP, for execution tests."""

from __future__ import annotations

import uuid
from typing import Any

from sqlmodel import select

from outbox.actions.models import Action
from outbox.actions.service import parse_envelope, submit
from outbox.agents.service import authenticate
from outbox.audit.models import AuditEvent
from outbox.runtime import Runtime


def submit_call(runtime: Runtime, key: str, tool: str, args: dict[str, Any], idem: str | None = None) -> str:
    with runtime.db.session() as session:
        agent = authenticate(session, key)
    assert agent is not None
    answer = submit(
        runtime,
        agent,
        parse_envelope({"tool": tool, "args": args}),
        idem or str(uuid.uuid4()),
        {"method": "POST", "path": "/v1/actions", "body": "(test)"},
    )
    assert answer.action_id is not None
    return answer.action_id


def load(runtime: Runtime, action_id: str) -> Action:
    with runtime.db.session() as session:
        action = session.get(Action, action_id)
    assert action is not None
    return action


def events(runtime: Runtime, action_id: str) -> list[tuple[str | None, str | None, str]]:
    with runtime.db.session() as session:
        rows = session.exec(select(AuditEvent).where(AuditEvent.action_id == action_id).order_by(AuditEvent.id)).all()  # type: ignore[arg-type]
    return [(e.from_status, e.to_status, e.event_type) for e in rows]
