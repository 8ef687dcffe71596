"""The export of the audit log (`outbox audit export`): versioned JSON Lines, complete enough to
replay traffic elsewhere.

The format is documented in docs/export.md, with a JSON Schema (docs/export.schema.json):

- the first line is a header (`record: "header"`) naming the format and its version;
- then one line per sealed event (`record: "event"`), in chain order, with its chain position
  (`seq`) and hashes; the first event of each action in the export also carries the action
  (`action`): the request exactly as received, the decision and the rules that made it, the
  approval gate, the artifact executed and the tool's response exactly as it came back (tools
  keep bytes that are not UTF-8 in base64 and say when they cut a response), and the action
  as its agent was shown it (`view`);
- the last line (`record: "end"`) counts what was written, so a file cut short is detected.

A replay against another model or policy needs nothing else. `outbox audit export` seals what
is pending first, so the export covers every committed event. It reads actions, their agents and
their approval requests, hence a package of its own above those domains.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, TextIO

from sqlmodel import Session, col, select

from outbox.actions.models import Action
from outbox.actions.schemas import ActionOut
from outbox.agents.models import Agent
from outbox.approvals.models import ApprovalRequest
from outbox.audit.models import AuditEvent
from outbox.audit.service import iter_events
from outbox.sqltypes import utcnow

EXPORT_FORMAT = "agent-outbox-export"
EXPORT_VERSION = 2


def export_jsonl(session: Session, stream: TextIO, *, since: datetime | None = None) -> int:
    """Write the export; returns how many events were written."""
    count = 0
    for record in export_records(session, since=since):
        stream.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        if record["record"] == "event":
            count += 1
    return count


def export_records(session: Session, *, since: datetime | None = None) -> Iterator[dict[str, Any]]:
    """The export's records, in order: header, events, end."""
    yield {
        "record": "header",
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": utcnow().isoformat(),
        "since": since.isoformat() if since is not None else None,
    }
    events = 0
    agents: dict[str, Agent | None] = {}
    seen: set[str] = set()
    for event in iter_events(session, since=since):
        line = _event_record(event)
        if event.action_id is not None and event.action_id not in seen:
            seen.add(event.action_id)
            action = session.get(Action, event.action_id)
            if action is not None:
                # The whole action once, on its first event in the export.
                if action.agent_id not in agents:
                    agents[action.agent_id] = session.get(Agent, action.agent_id)
                approval = session.exec(
                    select(ApprovalRequest).where(col(ApprovalRequest.action_id) == action.id)
                ).first()
                line["action"] = _action_record(action, agents[action.agent_id], approval, event)
        yield line
        events += 1
    yield {"record": "end", "events": events, "actions": len(seen)}


def _event_record(event: AuditEvent) -> dict[str, Any]:
    return {
        "record": "event",
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


def _action_record(
    action: Action, agent: Agent | None, approval: ApprovalRequest | None, first: AuditEvent
) -> dict[str, Any]:
    received = json.loads(first.data_json) if first.event_type == "action.received" else {}
    decided: Mapping[str, Any] = received.get("decision") or {}
    return {
        "id": action.id,
        "agent_id": action.agent_id,
        # The agent's name and roles as they are at export: replaying re-decides with these.
        "agent": agent.name if agent is not None else None,
        "agent_roles": list(agent.roles or ()) if agent is not None else [],
        "on_behalf_of": action.on_behalf_of,
        "tool": action.tool,
        "args": action.args,
        "reason": action.reason,
        "idempotency_key": action.idempotency_key,
        "status": action.status,
        "status_reason": action.status_reason,
        "created_at": action.created_at.isoformat(),
        "finished_at": action.finished_at.isoformat() if action.finished_at else None,
        "not_before": action.not_before.isoformat() if action.not_before else None,
        "decision": {
            "effect": action.decision_effect,
            "policy_effect": decided.get("policy_effect", action.decision_effect),
            "escalation": decided.get("escalation"),
            "rules": action.decision_rules,
            "policy_version": action.policy_version,
        },
        "targets": action.targets,
        "approval": _approval_record(approval),
        "request": action.request,
        "preview": action.preview,
        "artifact": action.artifact,
        "response": action.response,
        "response_truncated": response_truncated(action.response),
        "attempts": action.attempts,
        "problem": action.problem,
        # The shadow policy's outcome (docs/shadow-policy.md); null without one.
        "shadow": action.shadow,
        "view": ActionOut.of(action).model_dump(mode="json"),
    }


def _approval_record(approval: ApprovalRequest | None) -> dict[str, Any] | None:
    if approval is None:
        return None
    return {
        "quorum": approval.quorum,
        "expires_in_seconds": int((approval.expires_at - approval.created_at).total_seconds()),
        "status": approval.status,
        "rules": approval.rules,
        "gate": approval.gate,
    }


def response_truncated(response: Mapping[str, Any] | None) -> bool:
    """Whether the tool cut its response: tools say so with `truncated` or `<stream>_truncated`
    (http.request's body, a command's stdout and stderr)."""
    if not response:
        return False
    return any(value is True and (key == "truncated" or key.endswith("_truncated")) for key, value in response.items())
