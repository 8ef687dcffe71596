"""JSON Lines export of the audit log, complete enough to replay traffic elsewhere.

Each line is one sealed event with its chain position (`seq`) and hashes, in chain order; events
of an action carry the action's exact request, decision, artifact and response so that a replay
against another model or policy needs nothing else. `outbox audit export` seals what is pending
first, so the export covers every committed event. It lives with actions, above the audit core,
because it reads their rows.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TextIO

from sqlmodel import Session

from outbox.actions.models import Action
from outbox.audit.service import iter_events


def export_jsonl(session: Session, stream: TextIO, *, since: datetime | None = None) -> int:
    count = 0
    actions: dict[str, Action | None] = {}
    for event in iter_events(session, since=since):
        line = {
            "id": event.id,
            "seq": event.seq,
            "at": event.created_at.isoformat(),
            "type": event.event_type,
            "actor": event.actor,
            "action_id": event.action_id,
            "from": event.from_status,
            "to": event.to_status,
            "data": json.loads(event.data_json),
            "prev_hash": event.prev_hash,
            "hash": event.hash,
        }
        if event.action_id is not None and event.action_id not in actions:
            actions[event.action_id] = session.get(Action, event.action_id)
            action = actions[event.action_id]
            if action is not None:
                # The full action once, on its first event in the export.
                line["action"] = {
                    "agent_id": action.agent_id,
                    "on_behalf_of": action.on_behalf_of,
                    "tool": action.tool,
                    "args": action.args,
                    "reason": action.reason,
                    "idempotency_key": action.idempotency_key,
                    "status": action.status,
                    "decision": {
                        "effect": action.decision_effect,
                        "rules": action.decision_rules,
                        "policy_version": action.policy_version,
                    },
                    "targets": action.targets,
                    "request": action.request,
                    "preview": action.preview,
                    "artifact": action.artifact,
                    "response": action.response,
                    "attempts": action.attempts,
                }
        stream.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
        count += 1
    return count
