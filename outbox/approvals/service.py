"""Human approval gates: opening requests, deciding them, expiring them, and checking them
again right before the tool runs.

Approving is itself a policy decision: the human identity (`slack:U0123ABC`,
`user:oncall@example.com`) must be allowed act `approve` on every target of the action, with the
roles `g` rules give it. The agent that asked, and the human it acts for (or any identity linked
to them by `g` rules), never count. A request needs `quorum` distinct approvers, and every
decision counts only for the digest it was made on; one deny ends the request; a request past
its expiry fails closed. Who may decide is answered by `approvals/authority.py`, on identities in
their canonical form (`outbox/identities.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import structlog
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from outbox import metrics
from outbox.actions.lifecycle import transition
from outbox.actions.models import Action, ActionStatus
from outbox.approvals import repository
from outbox.approvals.authority import (
    ApprovalRefused,
    RefusalCode,
    approver_identity,
    authority_refusal,
    distinct_people,
    person_of,
)
from outbox.approvals.digest import action_digest, bound_targets
from outbox.approvals.models import ApprovalDecision, ApprovalRequest, ApprovalStatus
from outbox.approvals.schemas import ApprovalOut, Verdict
from outbox.audit.service import record_event
from outbox.deliveries import service as delivery
from outbox.errors import ApprovalsMisconfigured
from outbox.policy.approval_gates import ApprovalsConfig, approvals_config_for
from outbox.policy.engine import PolicyDecision, PolicyLoadError, PolicySnapshot
from outbox.problems import problem_document
from outbox.sqltypes import new_id, utcnow
from outbox.toolkit.base import Target

if TYPE_CHECKING:
    from outbox.runtime import Runtime

log = structlog.get_logger(__name__)


Outcome = Literal["approved", "recorded", "rejected", "duplicate"]


@dataclass(frozen=True)
class DecisionResult:
    outcome: Outcome
    message: str
    approval: ApprovalOut
    # Deliveries this decision caused, for the caller to attempt right after the commit.
    deliveries: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Opening a request (called by the actions service, inside the submission transaction)


def open_request(
    runtime: Runtime,
    session: Session,
    action: Action,
    *,
    agent: str,
    decision: PolicyDecision,
    escalations: Sequence[str] = (),
) -> ApprovalRequest:
    """Create the approval request for an action policy sends to a human, and its Slack post."""
    gate = _approvals_config(runtime, decision).resolve(action.tool, decision)
    targets = bound_targets(t.target for t in decision.targets)
    now = utcnow()
    channel = gate.channel or runtime.settings.slack_default_channel
    slack_channel = channel if runtime.approval_notifier.enabled() else None
    approval = ApprovalRequest(
        id=new_id("apr"),
        action_id=action.id,
        digest=action_digest(action, agent=agent, targets=targets, policy_version=decision.policy_version),
        status=ApprovalStatus.PENDING.value,
        rules=[*decision.rules(), *({"escalation": reason} for reason in escalations)],
        quorum=gate.quorum,
        policy_version=decision.policy_version,
        requested_by=agent,
        bound_targets=targets,
        gate=gate.record(),
        created_at=now,
        expires_at=now + gate.expires_in,
        slack_channel=slack_channel,
    )
    repository.insert(session, approval)
    record_event(
        session,
        event_type="approval.requested",
        actor="policy",
        action_id=action.id,
        data={
            "approval_id": approval.id,
            "digest": approval.digest,
            "quorum": approval.quorum,
            "expires_at": approval.expires_at.isoformat(),
            "rules": approval.rules,
            "gate": approval.gate,
        },
    )
    if runtime.approval_notifier.enabled() and slack_channel is None:
        log.warning("approval.no_slack_channel", approval_id=approval.id, hint="set OUTBOX_SLACK_DEFAULT_CHANNEL")
    _touch_slack(session, approval)
    return approval


def _approvals_config(runtime: Runtime, decision: PolicyDecision) -> ApprovalsConfig:
    """The approval gates of the policy version that made the decision."""
    active = runtime.policy.current
    try:
        return (
            active.approvals
            if active.version == decision.policy_version
            else approvals_config_for(active.snapshot.directory, decision.policy_version)
        )
    except PolicyLoadError as exc:
        # Fail closed: without valid gate terms (quorum, expiry) no request is opened.
        log.error("approvals.config_invalid", error=str(exc))
        raise ApprovalsMisconfigured from exc


def _touch_slack(session: Session, approval: ApprovalRequest) -> list[str]:
    """Queue a render of the approval's Slack message (post it, or update it)."""
    if approval.slack_channel is None:
        return []
    delivery.enqueue(
        session,
        kind=delivery.KIND_SLACK_MESSAGE,
        subject_id=approval.id,
        coalesce_key=f"{delivery.KIND_SLACK_MESSAGE}:{approval.id}",
    )
    return delivery.pending_ids(session, subject_id=approval.id)


# ---------------------------------------------------------------------------------------------
# Reading


def view(session: Session, approval: ApprovalRequest) -> ApprovalOut:
    action = repository.action_of(session, approval)
    return ApprovalOut.of(approval, action, repository.decisions(session, approval.id))


def get_approval(session: Session, ref: str) -> ApprovalOut:
    approval = repository.find(session, ref)
    if approval is None:
        raise ApprovalRefused(RefusalCode.NOT_FOUND, f"no approval request {ref!r}")
    return view(session, approval)


def list_approvals(session: Session, *, status: str | None = "pending", limit: int = 100) -> list[ApprovalOut]:
    return [view(session, row) for row in repository.newest(session, status=status, limit=limit)]


# ---------------------------------------------------------------------------------------------
# Deciding


def check_may_decide(
    runtime: Runtime, ref: str, identity: str, verdict: Verdict, digest: str | None = None
) -> ApprovalOut:
    """The request, or ApprovalRefused if `identity` could not decide now (read-only; used
    before opening a form, so that an unauthorized click never gets one)."""
    identity = approver_identity(identity)
    with runtime.db.session() as session:
        approval = repository.find(session, ref)
        if approval is None:
            raise ApprovalRefused(RefusalCode.NOT_FOUND, f"no approval request {ref!r}")
        action = repository.action_of(session, approval)
        refusal = _state_refusal(approval, digest) or authority_refusal(
            runtime.policy.current.snapshot,
            identity,
            on_behalf_of=action.on_behalf_of,
            targets=approval.bound_targets,
            verdict=verdict,
        )
        shown = view(session, approval)
    if refusal is not None:
        raise refusal
    return shown


def _state_refusal(approval: ApprovalRequest, digest: str | None) -> ApprovalRefused | None:
    if approval.status != ApprovalStatus.PENDING.value:
        who = f" by {approval.decided_by}" if approval.decided_by else ""
        return ApprovalRefused(RefusalCode.NOT_PENDING, f"this request is already {approval.status}{who}")
    if approval.expires_at <= utcnow():
        return ApprovalRefused(
            RefusalCode.EXPIRED, f"this request expired at {approval.expires_at:%Y-%m-%d %H:%M:%S} UTC; nothing ran"
        )
    if digest is not None and digest != approval.digest:
        return ApprovalRefused(
            RefusalCode.DIGEST_MISMATCH,
            "the request you were shown is not the one pending (digest differs); look at it again",
        )
    return None


def decide(
    runtime: Runtime,
    ref: str,
    identity: str,
    verdict: Verdict,
    *,
    via: str,
    reason: str | None = None,
    may_resubmit: bool = False,
    digest: str | None = None,
) -> DecisionResult:
    """Record one human's decision. Idempotent per approver; raises ApprovalRefused otherwise.

    Reaching the quorum moves the action to `queued` and publishes it after the commit; a deny
    moves it to `rejected` with a problem document the agent reads.
    """
    if verdict == "deny" and not (reason and reason.strip()):
        raise ApprovalRefused(RefusalCode.MISSING_REASON, "a denial needs a reason: the agent receives it")
    identity = approver_identity(identity)
    try:
        with runtime.db.session() as session:
            result, refusal, publish = _decide_locked(
                runtime,
                session,
                ref,
                identity=identity,
                verdict=verdict,
                via=via,
                reason=reason,
                may_resubmit=may_resubmit,
                digest=digest,
            )
    except IntegrityError as exc:
        # Two concurrent decisions by the same approver: the unique row already exists.
        raise ApprovalRefused(RefusalCode.NOT_PENDING, f"{identity} already decided on this request") from exc
    if refusal is not None:
        raise refusal
    assert result is not None
    if publish:
        runtime.dispatcher.publish([result.approval.action_id])
    if result.outcome in ("approved", "rejected"):
        waited = (utcnow() - result.approval.created_at).total_seconds()
        metrics.observe_approval_wait(waited, result.outcome)
    return result


def _decide_locked(
    runtime: Runtime,
    session: Session,
    ref: str,
    *,
    identity: str,
    verdict: Verdict,
    via: str,
    reason: str | None,
    may_resubmit: bool,
    digest: str | None,
) -> tuple[DecisionResult | None, ApprovalRefused | None, bool]:
    """The decision inside the transaction, on the locked request: its result, or the refusal
    (returned, not raised, so that its audit event and an expiry found on the way are committed),
    and whether the action is to be published after the commit."""
    snapshot = runtime.policy.current.snapshot
    me = person_of(snapshot, identity)
    approval = repository.find(session, ref, lock=True)
    if approval is None:
        raise ApprovalRefused(RefusalCode.NOT_FOUND, f"no approval request {ref!r}")
    action = repository.action_of(session, approval)
    # The same person, under this identity or one linked to it by `g` rules.
    previous = next(
        (d for d in repository.decisions(session, approval.id) if person_of(snapshot, d.approver) & me), None
    )
    if previous is not None and previous.verdict == verdict:
        # A double click, a Slack retry, the same command run twice: counted once.
        return _duplicate(session, approval, previous, identity), None, False
    refusal = _refusal(
        session,
        approval,
        action,
        snapshot=snapshot,
        identity=identity,
        verdict=verdict,
        via=via,
        digest=digest,
        previous=previous,
    )
    if refusal is not None:
        return None, refusal, False
    result, publish = _apply(
        runtime,
        session,
        approval,
        action,
        snapshot=snapshot,
        identity=identity,
        verdict=verdict,
        via=via,
        reason=reason,
        may_resubmit=may_resubmit,
    )
    return result, None, publish


def _duplicate(
    session: Session, approval: ApprovalRequest, previous: ApprovalDecision, identity: str
) -> DecisionResult:
    """The answer to a decision this person already recorded: nothing changes."""
    return DecisionResult(
        "duplicate",
        f"{identity} already decided ({previous.verdict}"
        + (f" as {previous.approver}" if previous.approver != identity else "")
        + f") at {previous.created_at:%H:%M:%S} UTC",
        view(session, approval),
    )


def _refusal(
    session: Session,
    approval: ApprovalRequest,
    action: Action,
    *,
    snapshot: PolicySnapshot,
    identity: str,
    verdict: Verdict,
    via: str,
    digest: str | None,
    previous: ApprovalDecision | None,
) -> ApprovalRefused | None:
    """Why this decision cannot be recorded (audited as `approval.refused`), or None. A request
    found expired is marked expired on the way."""
    refusal = _state_refusal(approval, digest)
    if refusal is not None and refusal.code is RefusalCode.EXPIRED:
        _expire(session, approval, actor="approvals")
    if refusal is None:
        refusal = authority_refusal(
            snapshot,
            identity,
            on_behalf_of=action.on_behalf_of,
            targets=approval.bound_targets,
            verdict=verdict,
        )
    if refusal is None and previous is not None:
        refusal = ApprovalRefused(
            RefusalCode.NOT_PENDING, f"{identity} already decided ({previous.verdict}); a decision is final"
        )
    if refusal is not None:
        record_event(
            session,
            event_type="approval.refused",
            actor=identity,
            action_id=action.id,
            data={"approval_id": approval.id, "verdict": verdict, "via": via, "code": refusal.code.value},
        )
    return refusal


def _apply(
    runtime: Runtime,
    session: Session,
    approval: ApprovalRequest,
    action: Action,
    *,
    snapshot: PolicySnapshot,
    identity: str,
    verdict: Verdict,
    via: str,
    reason: str | None,
    may_resubmit: bool,
) -> tuple[DecisionResult, bool]:
    now = utcnow()
    approvers = _record_decision(
        session,
        approval,
        action,
        snapshot=snapshot,
        identity=identity,
        verdict=verdict,
        via=via,
        reason=reason,
        now=now,
    )
    publish = False
    if verdict == "deny":
        _reject(session, approval, action, identity=identity, reason=reason, may_resubmit=may_resubmit, now=now)
        outcome: Outcome = "rejected"
        message = f"denied by {identity}; the agent is told why"
    elif len(approvers) >= approval.quorum:
        approval.status = ApprovalStatus.APPROVED.value
        approval.decided_at, approval.decided_by = now, identity
        publish = runtime.dispatcher.reaches_workers
        transition(
            session,
            action.id,
            from_statuses=[ActionStatus.AWAITING_APPROVAL],
            to_status=ActionStatus.QUEUED,
            actor=identity,
            data={"approval_id": approval.id, "digest": approval.digest, "approvers": approvers},
            status_reason=f"approved by {', '.join(approvers)}",
            # Without a dispatcher here (the CLI), the server's sweeper publishes it at once.
            last_published_at=now if publish else None,
        )
        outcome, message = "approved", f"approved ({len(approvers)} of {approval.quorum}); the call is queued"
    else:
        outcome = "recorded"
        message = f"approval recorded ({len(approvers)} of {approval.quorum}); waiting for another approver"
    repository.save(session, approval, flush=True)
    deliveries = _touch_slack(session, approval)
    session.refresh(action)
    return DecisionResult(outcome, message, view(session, approval), deliveries), publish


def _reject(
    session: Session,
    approval: ApprovalRequest,
    action: Action,
    *,
    identity: str,
    reason: str | None,
    may_resubmit: bool,
    now: datetime,
) -> None:
    """Close the request as rejected and move the action to `rejected` with the problem the agent reads."""
    approval.status = ApprovalStatus.REJECTED.value
    approval.decided_at, approval.decided_by = now, identity
    approval.reason, approval.may_resubmit = reason, may_resubmit
    transition(
        session,
        action.id,
        from_statuses=[ActionStatus.AWAITING_APPROVAL],
        to_status=ActionStatus.REJECTED,
        actor=identity,
        data={"approval_id": approval.id, "reason": reason, "may_resubmit": may_resubmit},
        status_reason=f"rejected by {identity}: {reason}",
        problem=rejection_problem(action.id, identity, reason or "", may_resubmit=may_resubmit),
    )


def _record_decision(
    session: Session,
    approval: ApprovalRequest,
    action: Action,
    *,
    snapshot: PolicySnapshot,
    identity: str,
    verdict: Verdict,
    via: str,
    reason: str | None,
    now: datetime,
) -> list[str]:
    """Insert one approver's decision and audit it; returns the distinct people who have approved
    the digest now pending, in the order they approved."""
    repository.insert(
        session,
        ApprovalDecision(
            id=new_id("apd"),
            approval_id=approval.id,
            approver=identity,
            verdict=verdict,
            reason=reason,
            digest=approval.digest,
            via=via,
            created_at=now,
        ),
    )
    approvers = distinct_people(
        snapshot,
        [
            d.approver
            for d in sorted(repository.decisions(session, approval.id), key=lambda d: d.created_at)
            if d.verdict == "approve" and d.digest == approval.digest
        ],
    )
    record_event(
        session,
        event_type=f"approval.{'approved' if verdict == 'approve' else 'denied'}_by",
        actor=identity,
        action_id=action.id,
        data={
            "approval_id": approval.id,
            "digest": approval.digest,
            "verdict": verdict,
            "reason": reason,
            "via": via,
            "approvals": len(approvers),
            "quorum": approval.quorum,
        },
    )
    return approvers


# ---------------------------------------------------------------------------------------------
# Expiry


def _expire(session: Session, approval: ApprovalRequest, *, actor: str) -> bool:
    now = utcnow()
    approval.status = ApprovalStatus.EXPIRED.value
    approval.decided_at = now
    approval.reason = "no decision before the request expired"
    repository.save(session, approval)
    moved = transition(
        session,
        approval.action_id,
        from_statuses=[ActionStatus.AWAITING_APPROVAL],
        to_status=ActionStatus.EXPIRED,
        actor=actor,
        data={"approval_id": approval.id, "expires_at": approval.expires_at.isoformat()},
        status_reason="no approval before the request expired; nothing ran",
        problem=expiry_problem(approval.action_id, approval.expires_at),
    )
    _touch_slack(session, approval)
    return moved


def expire_due(runtime: Runtime, *, limit: int = 500) -> int:
    """Fail closed every pending request past its expiry. Returns how many actions expired."""
    now = utcnow()
    expired = 0
    with runtime.db.session() as session:
        due = repository.pending_due(session, now, limit=limit)
    for approval_id in due:
        with runtime.db.session() as session:
            approval = repository.find(session, approval_id, lock=True)
            if approval is None or approval.status != ApprovalStatus.PENDING.value or approval.expires_at > now:
                continue
            moved = _expire(session, approval, actor="sweeper")
        if moved:
            expired += 1
            metrics.observe_approval_wait((now - approval.created_at).total_seconds(), "expired")
    return expired


# ---------------------------------------------------------------------------------------------
# Cancellation


def cancel_request(session: Session, action_id: str, *, actor: str) -> ApprovalRequest | None:
    """Close the pending approval of an action its agent has just cancelled, on the record.

    Called inside the transaction that cancelled the action. Returns the closed request, or None
    when the action has none pending (it was never gated, or a human decided first).
    """
    approval = repository.find(session, action_id, lock=True)
    if approval is None or approval.status != ApprovalStatus.PENDING.value:
        return None
    approval.status = ApprovalStatus.CANCELLED.value
    approval.decided_at = utcnow()
    approval.reason = "the agent cancelled the action"
    repository.save(session, approval)
    record_event(
        session,
        event_type="approval.cancelled",
        actor=actor,
        action_id=action_id,
        data={"approval_id": approval.id, "reason": approval.reason},
    )
    _touch_slack(session, approval)
    return approval


# ---------------------------------------------------------------------------------------------
# Execution


def verify_for_execution(runtime: Runtime, action: Action, *, agent: str, targets: Sequence[Target]) -> str | None:
    """Why an approved action must not run now, or None. Marks the approval used on first run.

    The digest is recomputed from the action row and the tool's current targets; the approvers
    are checked against the running policy. Either differing means nothing runs.
    """
    snapshot = runtime.policy.current.snapshot
    with runtime.db.session() as session:
        approval = repository.find(session, action.id, lock=True)
        if approval is None:
            return "policy required an approval for this call but none exists; nothing ran"
        if approval.status != ApprovalStatus.APPROVED.value:
            return f"the approval request is {approval.status}, not approved; nothing ran"
        recomputed = action_digest(action, agent=agent, targets=targets, policy_version=approval.policy_version)
        if recomputed != approval.digest:
            return (
                "what would run now differs from what was approved (approval digest "
                f"{approval.digest[:12]}…, now {recomputed[:12]}…); nothing ran"
            )
        valid: list[str] = []
        refused: list[str] = []
        for decision in sorted(repository.decisions(session, approval.id), key=lambda d: d.created_at):
            if decision.verdict != "approve" or decision.digest != approval.digest:
                continue
            refusal = authority_refusal(
                snapshot,
                decision.approver,
                on_behalf_of=action.on_behalf_of,
                targets=targets,
                verdict="approve",
            )
            (refused if refusal else valid).append(decision.approver)
        valid = distinct_people(snapshot, valid)
        if len(valid) < approval.quorum:
            return (
                f"policy {snapshot.version} no longer lets {', '.join(refused) or 'the approvers'} approve this "
                f"call ({len(valid)} of {approval.quorum} approvals still valid); nothing ran"
            )
        if approval.consumed_at is None:
            approval.consumed_at = utcnow()
            repository.save(session, approval)
            record_event(
                session,
                event_type="approval.used",
                actor="worker",
                action_id=action.id,
                data={"approval_id": approval.id, "digest": approval.digest, "approvers": valid},
            )
    return None


# ---------------------------------------------------------------------------------------------
# What the agent reads (RFC 9457 problem documents kept on the action)


def rejection_problem(action_id: str, approver: str, reason: str, *, may_resubmit: bool) -> dict[str, Any]:
    if may_resubmit:
        hint = (
            "A human rejected this call as submitted but may accept a changed one. Asking again makes "
            "sense only after changing the call as the reason says; submit the corrected call with a "
            "new Idempotency-Key."
        )
    else:
        hint = (
            "A human rejected this call. Asking again does not make sense: do not resubmit it, changed "
            "or not, unless the person you act for explicitly asks you to; tell them it was rejected and why."
        )
    return problem_document(
        403,
        "rejected-by-approver",
        "Rejected by an approver",
        f"{approver} rejected this call: {reason}",
        hint=hint,
        action_id=action_id,
        action_status=ActionStatus.REJECTED.value,
        approver=approver,
        reason=reason,
        may_resubmit=may_resubmit,
    )


def expiry_problem(action_id: str, expires_at: datetime) -> dict[str, Any]:
    return problem_document(
        403,
        "approval-expired",
        "Approval expired",
        f"No approver decided before {expires_at.isoformat()}; nothing ran.",
        hint=(
            "Nobody rejected the call; nobody approved it in time. Asking again may make sense if the "
            "call is still needed: submit it again with a new Idempotency-Key, and tell the person you act "
            "for that it is waiting for an approver."
        ),
        action_id=action_id,
        action_status=ActionStatus.EXPIRED.value,
    )
