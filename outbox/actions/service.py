"""Submitting, reading and cancelling actions: the agent contract's business rules."""

from __future__ import annotations

import base64
import binascii
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from sqlmodel import Session

from outbox import metrics
from outbox.actions import repository
from outbox.actions.callbacks import require_callback_allowed
from outbox.actions.lifecycle import transition
from outbox.actions.models import CANCELLABLE_STATUSES, Action, ActionStatus
from outbox.actions.schemas import ActionCreate, ActionOut, ActionPage, AdminActionOut
from outbox.actions.shadow import LiveCall, ShadowDecision, shadow_record
from outbox.agents.service import AuthenticatedAgent
from outbox.audit.service import record_event
from outbox.canonical import value_problems
from outbox.errors import ActionNotCancellable, ActionNotFound, InvalidCursor, ToolUnavailable, ValidationFailed
from outbox.idempotency import service as idempotency
from outbox.logs import bind_log_context
from outbox.policy.effective import EffectiveDecision, blast_radius, effective_decision
from outbox.policy.engine import PolicyDecision
from outbox.policy.matching import Subject
from outbox.problems import problem_document, pydantic_errors
from outbox.sqltypes import new_id, utcnow
from outbox.toolkit.base import (
    ChecksAvailability,
    DryRunnable,
    Previewable,
    Target,
    Tool,
    ToolArgumentsError,
)
from outbox.toolkit.registry import find_tool

if TYPE_CHECKING:
    from outbox.runtime import Runtime


@dataclass(frozen=True, slots=True)
class Answer:
    """What every face (HTTP, MCP) answers about a submitted call: the action as it is now.

    `status` is the agent contract's, in HTTP terms (other faces map it): 202 while the action is
    pending, 200 once it is terminal, and for an outcome decided against the call (a policy
    denial, a human's rejection, an approval that expired) the status of its problem document
    (403), which is then the `body`; otherwise `body` is the action. `action` is the action
    itself (`ActionOut` as JSON) whenever one was recorded and read; None only for a stored
    answer replayed as stored. `retry_after`: for a deferred action, the seconds until its
    `not_before`, when asking again makes sense.
    """

    status: int
    body: dict[str, Any]
    action_id: str | None
    replayed: bool = False
    action: dict[str, Any] | None = None
    retry_after: int | None = None

    @property
    def location(self) -> str | None:
        return f"/v1/actions/{self.action_id}" if self.action_id else None


ON_BEHALF_OF_HINT = (
    "Send the person as a bare e-mail address like ada@example.com, or as user:<name> or "
    "slack:<Slack user id>: no display name, no mailto:, no invisible characters. Then send the "
    "request again with a new Idempotency-Key."
)


def parse_envelope(payload: Any) -> ActionCreate:
    """Validate `{tool, args, …}`. The JSON rules of `outbox.canonical` (finite numbers, integers
    within ±(2^53 - 1), no lone surrogates or NUL, bounded nesting) hold for payloads built in
    Python too, so every face refuses what the HTTP edge refuses, before anything is recorded."""
    if not isinstance(payload, dict):
        raise ValidationFailed([{"field": "body", "message": "the body must be a JSON object"}])
    problems = value_problems(payload)
    if problems:
        raise ValidationFailed([{"field": p.path, "message": p.message} for p in problems])
    try:
        return ActionCreate.model_validate(payload)
    except ValidationError as exc:
        errors = pydantic_errors(exc.errors())
        hint = ON_BEHALF_OF_HINT if any(e["field"] == "on_behalf_of" for e in errors) else None
        raise ValidationFailed(errors, hint=hint) from exc


def submit(
    runtime: Runtime,
    agent: AuthenticatedAgent,
    envelope: ActionCreate,
    idempotency_key: str,
    request_record: dict[str, Any],
) -> Answer:
    """Decide and record one tool call. Idempotent per (agent, key).

    A key already answered is answered again, with the action as it is now, from one read (no
    write lock, nothing run). Otherwise the call is decided outside any transaction and recorded
    in one: the action with its status after policy, its audit events, its approval request if
    any, and the key's stored answer. A call that would run, to a tool that cannot run on this
    server, is refused (`ToolUnavailable`) with nothing recorded, so the key stays free."""
    fp = idempotency.fingerprint(envelope.tool, envelope.args, envelope.on_behalf_of)
    stored = idempotency.lookup(runtime.db, agent.id, idempotency_key, fp, _CURRENT_ACTION)
    if stored is not None:
        return replayed_answer(stored)
    return _record(runtime, agent, envelope, idempotency_key, request_record, fp)


# A replay reads the action with the key's record, in one statement: every column an answer
# shows (not the recorded request, which can be large and is never shown, nor the shadow
# policy's decision, which agents never see).
_CURRENT_ACTION = idempotency.CurrentRow(
    Action.__table__,  # type: ignore[attr-defined]
    [column.name for column in Action.__table__.columns if column.name not in {"request", "shadow"}],  # type: ignore[attr-defined]
)

# Outcomes decided against the call: the agent is answered with the problem document kept on the
# action (the policy's 403, the approver's reason, the expiry), saying whether to ask again.
_DECIDED_AGAINST = frozenset({ActionStatus.DENIED, ActionStatus.REJECTED, ActionStatus.EXPIRED})


def answer_for(action: ActionOut, *, replayed: bool = False) -> Answer:
    """The agent's answer for an action in its current state (see `Answer`): the one rule for a
    fresh submission, a replay, and a wait that ended."""
    body = action.model_dump(mode="json")
    status = ActionStatus(action.status)
    if status in _DECIDED_AGAINST and action.problem is not None:
        problem = action.problem
        return Answer(int(problem.get("status", 403)), problem, action.id, replayed, body)
    retry_after = None
    if status is ActionStatus.DEFERRED and action.not_before is not None:
        retry_after = seconds_until(action.not_before)
    return Answer(200 if status.is_terminal else 202, body, action.id, replayed, body, retry_after)


def seconds_until(moment: datetime) -> int:
    """Whole seconds from now until `moment`, at least 1: a Retry-After of 0 would invite asking
    again at once, and a moment just past means the sweeper has not resumed the action yet."""
    return max(1, math.ceil((moment - utcnow()).total_seconds()))


def replayed_answer(stored: idempotency.Replay) -> Answer:
    """A key's answer again: the action it recorded as it is now (a retrying agent must not
    believe a finished action is still queued; docs/idempotency.md says why this departs from the
    usual replay of the stored response). An answer that recorded no action is replayed as stored."""
    if stored.current is None:
        action_id = stored.action_id or stored.body.get("id") or stored.body.get("action_id")
        return Answer(stored.status, stored.body, action_id, replayed=True)
    action = ActionOut.of_columns(stored.current)
    if action.status == ActionStatus.DENIED and action.problem is None:
        # Recorded before denials kept their problem document on the action: the stored 403 is it.
        return Answer(stored.status, stored.body, action.id, True, action.model_dump(mode="json"))
    return answer_for(action, replayed=True)


def current_answer(runtime: Runtime, agent: AuthenticatedAgent, action_id: str, *, replayed: bool = False) -> Answer:
    """The answer for one of this agent's actions, read now (no write lock)."""
    with runtime.db.read_session() as session:
        action = ActionOut.of(get_action(session, agent, action_id))
    return answer_for(action, replayed=replayed)


class _AnsweredMeanwhile(Exception):
    """A concurrent request with the same key recorded the call first: roll back, send its answer."""

    def __init__(self, stored: idempotency.Replay) -> None:
        super().__init__()
        self.stored = stored


# Where the policy's effect sends a received action.
_STATUS_AFTER_POLICY = {
    "allow": ActionStatus.QUEUED,
    "approve": ActionStatus.AWAITING_APPROVAL,
    "deny": ActionStatus.DENIED,
}


def _record(
    runtime: Runtime,
    agent: AuthenticatedAgent,
    envelope: ActionCreate,
    idempotency_key: str,
    request_record: dict[str, Any],
    fp: str,
) -> Answer:
    active = runtime.policy.current
    tool, args = parse_call(active.tools, envelope)
    targets = tool.targets(args)
    subject = Subject(agent.principal, agent.roles)
    # A callback is a request the outbox makes for the agent: policy allows it or it is a 422.
    if envelope.callback_url is not None:
        require_callback_allowed(active.snapshot, subject, envelope.callback_url)
    # Policy, then the tool's blast-radius bound, which may send an allowed call to a human.
    verdict = effective_decision(active.snapshot, subject, targets, blast_radius=blast_radius(tool, args))
    # The shadow policy decides the same call too: recorded, never enforced.
    shadow = shadow_record(
        runtime.shadow_policy.current if runtime.shadow_policy is not None else None,
        active,
        LiveCall(subject, tool, envelope.args, args, verdict),
    )
    if verdict.effect != "deny":
        _refuse_if_unavailable(tool)
    # A denied call runs nothing, not even a dry run.
    preview = _preview(tool, args, with_dry_run=verdict.effect != "deny")
    call = _Call(agent, envelope, tool, args, targets, verdict, preview, idempotency_key, request_record, shadow)
    action = _decided_columns(new_id("act"), call)
    action_id = action["id"]
    bind_log_context(action_id=action_id, tool=tool.name)
    answer = _answer(action, verdict.policy)
    try:
        # Committed with the submissions that arrive meanwhile (group commit on SQLite).
        runtime.db.write(functools.partial(_write_submission, runtime, call, action, fp, (answer.status, answer.body)))
    except _AnsweredMeanwhile as meanwhile:
        # The winner has committed: its action as it is now, read like any replay.
        again = idempotency.lookup(runtime.db, agent.id, idempotency_key, fp, _CURRENT_ACTION)
        return replayed_answer(again or meanwhile.stored)
    metrics.record_decision(verdict.effect, tool.name)
    if shadow is not None:
        shadow.count()
    if action["status"] == ActionStatus.QUEUED:
        # The answer may wait for the workers to catch up (embedded backpressure).
        runtime.dispatcher.publish([action_id], backpressure=True)
    return answer


def _write_submission(
    runtime: Runtime,
    call: _Call,
    action: dict[str, Any],
    fp: str,
    answer: tuple[int, dict[str, Any]],
    session: Session,
) -> None:
    """Everything a submission writes, in the caller's transaction: the key's answer first (a
    concurrent request with the same key that committed first ends this one), the action, its
    events and its approval request."""
    stored = idempotency.record_answer(
        session,
        agent_id=call.agent.id,
        key=call.idempotency_key,
        fp=fp,
        ttl=timedelta(hours=runtime.settings.idempotency_ttl_hours),
        status=answer[0],
        body=answer[1],
        action_id=action["id"],
    )
    if stored is not None:
        raise _AnsweredMeanwhile(stored)
    repository.insert(session, action)
    _audit_received(session, action, call)
    if call.verdict.effect == "approve":
        _open_approval(runtime, session, Action(**action), call.agent, call.verdict)
    _audit_decided(session, action, call)


def _refuse_if_unavailable(tool: Tool) -> None:
    """A call that would run (allowed, or sent to a human) to a tool that cannot run on this
    server (no usable sandbox, a secret missing) is refused before its dry run and before
    anything is recorded: recorded, the action would only fail, and its failure would be replayed
    for the key even after the operator fixed the server. Refused, the key stays free.

    A call policy denies is denied whatever the server's state: it would run nothing anyway, the
    denial does not change once the server is fixed, and an agent not allowed a tool is not told
    which secret this server lacks."""
    if isinstance(tool, ChecksAvailability):
        reason = tool.unavailable_reason()
        if reason is not None:
            raise ToolUnavailable(tool.name, reason)


def parse_call(tools: Mapping[str, Tool], envelope: ActionCreate) -> tuple[Tool, BaseModel]:
    """The named tool and its parsed arguments, or a 422 saying which field is wrong."""
    tool = find_tool(tools, envelope.tool)
    if tool is None:
        raise ValidationFailed(
            [{"field": "tool", "message": f"unknown tool {envelope.tool!r}"}],
            hint=f"Use one of: {', '.join(tools)}. GET /v1/tools lists them with their schemas.",
        )
    try:
        args = tool.parse_args(envelope.args)
    except ValidationError as exc:
        raise ValidationFailed(pydantic_errors(exc.errors(), prefix="args")) from exc
    except ToolArgumentsError as exc:
        raise ValidationFailed(
            [{"field": f"args.{p.field}", "message": p.message} for p in exc.problems], hint=exc.hint
        ) from exc
    return tool, args


@dataclass(frozen=True, slots=True)
class _Call:
    """One submitted call, parsed and decided, before anything is recorded."""

    agent: AuthenticatedAgent
    envelope: ActionCreate
    tool: Tool
    args: BaseModel
    targets: list[Target]
    verdict: EffectiveDecision
    preview: dict[str, Any] | None
    idempotency_key: str
    request_record: dict[str, Any]
    shadow: ShadowDecision | None = None

    @property
    def normalised_args(self) -> dict[str, Any]:
        return self.args.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _decided_columns(action_id: str, call: _Call) -> dict[str, Any]:
    """The action row as it will be committed, received and already moved by policy: every
    column, as plain values (building the ORM object costs more than inserting the row)."""
    verdict, decision = call.verdict, call.verdict.policy
    status = _STATUS_AFTER_POLICY[verdict.effect]
    now = utcnow()
    return {
        "id": action_id,
        "agent_id": call.agent.id,
        "on_behalf_of": call.envelope.on_behalf_of,
        "tool": call.tool.name,
        "args": call.normalised_args,
        "reason": call.envelope.reason,
        "idempotency_key": call.idempotency_key,
        "status": status.value,
        "status_reason": verdict.explain() if verdict.effect != "allow" else None,
        "decision_effect": verdict.effect,
        "decision_rules": decision.rules(),
        "targets": [
            {"object": t.object, "act": t.act, "effect": d.effect}
            for t, d in zip(call.targets, decision.targets, strict=True)
        ],
        "policy_version": decision.policy_version,
        "shadow": call.shadow.record() if call.shadow is not None else None,
        "request": call.request_record,
        "preview": call.preview,
        "callback_url": call.envelope.callback_url,
        "problem": None,
        "artifact": None,
        "response": None,
        "attempts": 0,
        "not_before": None,
        "lease_owner": None,
        "lease_expires_at": None,
        # Publishing follows the commit; the sweeper re-publishes if that message is lost.
        "last_published_at": now if status is ActionStatus.QUEUED else None,
        "created_at": now,
        "updated_at": now,
        "finished_at": now if status.is_terminal else None,
    }


def _audit_received(session: Session, action: dict[str, Any], call: _Call) -> None:
    """The call exactly as received, with its decision (and the shadow policy's, when one is
    configured)."""
    data = {
        "request": call.request_record,
        "tool": call.tool.name,
        "args": action["args"],
        "on_behalf_of": call.envelope.on_behalf_of,
        "decision": call.verdict.record(),
        "preview": call.preview,
    }
    if action["shadow"] is not None:
        data["shadow"] = action["shadow"]
    record_event(
        session,
        event_type="action.received",
        actor=call.agent.principal,
        action_id=action["id"],
        to_status=ActionStatus.RECEIVED.value,
        data=data,
    )


def _audit_decided(session: Session, action: dict[str, Any], call: _Call) -> None:
    """Where policy sent the received call."""
    record_event(
        session,
        event_type=f"action.{action['status']}",
        actor="policy",
        action_id=action["id"],
        from_status=ActionStatus.RECEIVED.value,
        to_status=action["status"],
        data={"decision": call.verdict.record(), "explanation": call.verdict.explain()},
    )


def _answer(action: dict[str, Any], decision: PolicyDecision) -> Answer:
    """The answer to the submission, also stored with the key: 403 with a problem document for a
    denied call, else 202 with the action."""
    if action["status"] == ActionStatus.DENIED:
        # GET /v1/actions/{id} (and a replay) show the same problem document as the 403 answer.
        action["problem"] = _denied_problem(action["id"], decision)
    return answer_for(ActionOut.of_columns(action))


def _preview(tool: Tool, args: BaseModel, *, with_dry_run: bool) -> dict[str, Any] | None:
    """What an approver (and the audit log) sees: the tool's preview, plus the dry-run output
    for tools that declare one, run in the same sandbox at submission."""
    preview = tool.preview(args) if isinstance(tool, Previewable) else None
    if with_dry_run and isinstance(tool, DryRunnable):
        try:
            result = tool.dry_run(args)
        except Exception as exc:  # a dry run that cannot run is shown, not hidden
            outcome: dict[str, Any] | None = {"error": f"{type(exc).__name__}: {exc}"}
        else:
            outcome = None if result is None else {**result.artifact(), **result.response()}
        if outcome is not None:
            preview = {**(preview or {}), "dry_run": outcome}
    return preview


def _open_approval(
    runtime: Runtime,
    session: Session,
    action: Action,
    agent: AuthenticatedAgent,
    verdict: EffectiveDecision,
) -> None:
    """The approval request, bound to a digest of exactly what will run (outbox/approvals)."""
    escalations = [verdict.escalation] if verdict.escalation else []
    runtime.approvals.open(
        runtime, session, action, agent=agent.principal, decision=verdict.policy, escalations=escalations
    )


def _denied_problem(action_id: str, decision: PolicyDecision) -> dict[str, Any]:
    rules = decision.rules()
    if rules:
        hint = (
            "This call is denied by policy. Do not retry it unchanged: narrow the call to targets "
            "your role allows, or ask a human to change the policy in git."
        )
    else:
        hint = (
            "No policy rule allows this call for your roles. Call only tools and targets your "
            "role is granted, or ask a human to grant it in the policy files."
        )
    return problem_document(
        403,
        "denied-by-policy",
        "Denied by policy",
        f"Denied: {decision.explain()}.",
        hint=hint,
        action_id=action_id,
        action_status="denied",
        decision={"effect": decision.effect, "rules": rules, "policy_version": decision.policy_version},
        links={"action": f"/v1/actions/{action_id}"},
    )


def get_action(session: Session, agent: AuthenticatedAgent, action_id: str) -> Action:
    action = repository.get(session, action_id)
    if action is None or action.agent_id != agent.id:
        # Another agent's action is indistinguishable from a missing one.
        raise ActionNotFound(action_id)
    return action


def read_as_admin(runtime: Runtime, action_id: str) -> AdminActionOut:
    """Any agent's action as an admin reads it, with the shadow policy's decision."""
    with runtime.db.read_session() as session:
        action = repository.get(session, action_id)
        if action is None:
            raise ActionNotFound(action_id)
        return AdminActionOut.of_action(action)


def _encode_cursor(created_at: datetime, action_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{action_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, action_id = raw.split("|", 1)
        return datetime.fromisoformat(stamp), action_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor from exc


def list_actions(
    session: Session,
    agent: AuthenticatedAgent,
    *,
    status: str | None,
    tool: str | None,
    cursor: str | None,
    limit: int,
) -> ActionPage:
    if status is not None and status not in {s.value for s in ActionStatus}:
        raise ValidationFailed(
            [{"field": "status", "message": f"unknown status; one of {', '.join(s.value for s in ActionStatus)}"}]
        )
    before = _decode_cursor(cursor) if cursor is not None else None
    # One row more than the page says whether there is a next page.
    rows = repository.newest_first(session, agent.id, status=status, tool=tool, before=before, limit=limit + 1)
    items, more = rows[:limit], len(rows) > limit
    next_cursor = _encode_cursor(items[-1].created_at, items[-1].id) if more and items else None
    links = {"self": "/v1/actions"}
    if next_cursor:
        links["next"] = f"/v1/actions?cursor={next_cursor}&limit={limit}"
    return ActionPage(items=[ActionOut.of(a) for a in items], next_cursor=next_cursor, links=links)


def cancel_action(runtime: Runtime, agent: AuthenticatedAgent, action_id: str) -> Action:
    with runtime.db.session() as session:
        action = get_action(session, agent, action_id)
        moved = transition(
            session,
            action_id,
            from_statuses=CANCELLABLE_STATUSES,
            to_status=ActionStatus.CANCELLED,
            actor=agent.principal,
            status_reason="cancelled by the agent",
        )
        if moved:
            runtime.approvals.cancel(session, action_id, actor=agent.principal)
        session.refresh(action)
        if not moved:
            raise ActionNotCancellable(action_id, action.status)
        return action
