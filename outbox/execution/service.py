"""Running one action: claim, execute, record. The same code runs in Celery and embedded workers.

A worker claims an action with a conditional update (queued → running, with a lease; see
outbox/jobs/repository.py). A second delivery of the same message finds the action no longer
queued and does nothing. The tool runs outside any transaction; its outcome is recorded in one
transaction with its audit event, and only if this worker's attempt still holds the lease.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog

from outbox import metrics
from outbox.actions.models import Action, ActionStatus
from outbox.agents.models import Agent
from outbox.agents.principals import principal
from outbox.approvals.service import verify_for_execution
from outbox.audit.service import record_event
from outbox.execution.leases import ACTION_JOBS, action_retries
from outbox.jobs import repository as jobs
from outbox.jobs.backoff import RetryPolicy
from outbox.policy.effective import blast_radius, effective_decision, execution_refusal
from outbox.policy.matching import Subject
from outbox.sqltypes import utcnow
from outbox.toolkit.base import Deferred, ExecutionContext, Failed, Previewable, Succeeded, ToolOutcome

if TYPE_CHECKING:
    from outbox.runtime import Runtime

log = structlog.get_logger(__name__)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


@dataclass(frozen=True, slots=True)
class Claimed:
    """An action this worker holds the lease on, and its agent as of the claim (None if gone)."""

    action: Action
    agent: Agent | None


def claim(runtime: Runtime, action_id: str, worker: str) -> Claimed | None:
    """queued → running with a lease, or None if someone else has it or it is not due. The
    agent is read in the same transaction (one transaction less per execution)."""
    now = utcnow()
    with runtime.db.session() as session:
        won = jobs.claim(
            session,
            ACTION_JOBS,
            action_id,
            claimable=[ActionStatus.QUEUED.value],
            running=ActionStatus.RUNNING.value,
            owner=worker,
            now=now,
            lease=timedelta(seconds=runtime.settings.lease_seconds),
            values={"not_before": None},
        )
        if won is None:
            return None
        record_event(
            session,
            event_type=f"action.{ActionStatus.RUNNING.value}",
            actor=f"worker:{worker}",
            action_id=action_id,
            from_status=ActionStatus.QUEUED.value,
            to_status=ActionStatus.RUNNING.value,
            data={"attempt": won.attempt},
        )
        action = session.get(Action, action_id)
        assert action is not None  # the claim just updated it
        return Claimed(action, session.get(Agent, action.agent_id))


def run_action(runtime: Runtime, action_id: str, *, rng: random.Random | None = None) -> str | None:
    """Execute an action if it can be claimed; return the status it ended in (None if not run).

    `rng` draws the retry delay's jitter (tests pass a seeded one)."""
    worker = worker_identity()
    claimed = claim(runtime, action_id, worker)
    if claimed is None:
        return None
    action = claimed.action
    bound = log.bind(action_id=action_id, tool=action.tool, attempt=action.attempts)
    metrics.note_worker_policy(runtime.policy.current)
    started = time.perf_counter()
    outcome = _execute(runtime, claimed)
    elapsed = time.perf_counter() - started
    status = _record_outcome(runtime, action, worker, outcome, rng=rng)
    metrics.observe_execution(action.tool, status, elapsed)
    bound.info("action.executed", status=status)
    return status


def _execute(runtime: Runtime, claimed: Claimed) -> ToolOutcome:
    action, agent = claimed.action, claimed.agent
    active = runtime.policy.current
    tool = active.tools.get(action.tool)
    if tool is None:
        return Failed(f"the tool {action.tool!r} is no longer defined by the running policy", retryable=False)
    if agent is None or agent.revoked_at is not None:
        return Failed("the agent's access was revoked before execution", retryable=False)
    try:
        args = tool.parse_args(action.args)
        # Policy is checked again at execution: a call that policy denies now does not run,
        # whatever it was when it was submitted.
        targets = tool.targets(args)
        verdict = effective_decision(
            active.snapshot,
            Subject(principal(agent.name), tuple(agent.roles)),
            targets,
            blast_radius=blast_radius(tool, args),
        )
    except Exception as exc:  # definitions may have changed under a queued action
        return Failed(f"the arguments no longer validate: {exc}", retryable=False)
    refusal = execution_refusal(verdict, action.decision_effect)
    if refusal is not None:
        return Failed(refusal, retryable=False)
    if action.decision_effect == "approve":
        # What runs must be what was approved (the digest), approved by people the running
        # policy still accepts as approvers; otherwise nothing runs.
        refusal = verify_for_execution(runtime, action, agent=principal(agent.name), targets=targets)
        if refusal is not None:
            return Failed(refusal, retryable=False)
    if isinstance(tool, Previewable) and action.preview is not None:
        recorded = {k: v for k, v in action.preview.items() if k != "dry_run"}
        if tool.preview(args) != recorded:
            # A reloaded tool definition would run something other than what was submitted
            # (another argv, say): what the record, the dry run and any approver saw is binding.
            return Failed(
                "the tool's definition changed since submission and would now run something else; submit again",
                retryable=False,
            )
    ctx = ExecutionContext(
        action_id=action.id,
        agent_id=action.agent_id,
        agent_name=agent.name,
        on_behalf_of=action.on_behalf_of,
        idempotency_key=action.idempotency_key,
        attempt=action.attempts,
    )
    try:
        return tool.execute(ctx, args)
    except Exception as exc:
        log.exception("tool.crashed", action_id=action.id, tool=action.tool)
        return Failed(f"the tool raised {type(exc).__name__}: {exc}", retryable=True)


def _record_outcome(
    runtime: Runtime, action: Action, worker: str, outcome: ToolOutcome, *, rng: random.Random | None = None
) -> str:
    """Settle this worker's attempt with its outcome and audit it; "lease_lost" if the lease
    expired and the action was re-driven meanwhile (the outcome is then kept as evidence only)."""
    target, values, data = _next_state(action, outcome, action_retries(runtime.settings), rng)
    actor = f"worker:{worker}"
    now = utcnow()
    if target.is_terminal:
        values["finished_at"] = now
    held = jobs.Claim(job_id=action.id, attempt=action.attempts, owner=worker, lease_until=now)
    with runtime.db.session() as session:
        moved = jobs.settle(
            session,
            ACTION_JOBS,
            held,
            held=ActionStatus.RUNNING.value,
            now=now,
            values={"status": target.value, **values},
        )
        if not moved:
            # The lease expired and the sweeper gave the action to someone else: keep what
            # happened on the record anyway, it is evidence.
            record_event(
                session,
                event_type="action.late_result",
                actor=actor,
                action_id=action.id,
                data={"attempt": action.attempts, "outcome": type(outcome).__name__, **data},
            )
            return "lease_lost"
        record_event(
            session,
            event_type=f"action.{target.value}",
            actor=actor,
            action_id=action.id,
            from_status=ActionStatus.RUNNING.value,
            to_status=target.value,
            data={"attempt": action.attempts, **data},
        )
    return target.value


def _next_state(
    action: Action, outcome: ToolOutcome, retries: RetryPolicy, rng: random.Random | None
) -> tuple[ActionStatus, dict[str, Any], dict[str, Any]]:
    """Where an attempt's outcome takes the action: the status, the columns to set, and the
    audit event's data. A retryable failure is queued again after a backoff until the attempts
    are used up; then, like any other failure, it is dead-lettered as failed with the reason."""
    target: ActionStatus
    values: dict[str, Any]
    data: dict[str, Any]
    if isinstance(outcome, Succeeded):
        target, values, data = (
            ActionStatus.SUCCEEDED,
            {"artifact": outcome.artifact, "response": outcome.response, "status_reason": outcome.summary},
            {"artifact": outcome.artifact, "response": outcome.response},
        )
    elif isinstance(outcome, Deferred):
        target, values, data = (
            ActionStatus.DEFERRED,
            # Waiting for a window is not an attempt.
            {
                "not_before": outcome.not_before,
                "status_reason": outcome.reason,
                "attempts": action.attempts - 1,
                "last_published_at": None,
            },
            {"not_before": outcome.not_before.isoformat(), "reason": outcome.reason},
        )
    elif outcome.retryable and not retries.exhausted(action.attempts):
        delay = retries.delay(action.attempts, rng)
        target, values, data = (
            ActionStatus.QUEUED,
            {
                "not_before": utcnow() + timedelta(seconds=delay),
                # The sweeper publishes it once not_before has passed.
                "last_published_at": None,
                "status_reason": f"attempt {action.attempts} failed, retrying: {outcome.reason}",
                "artifact": outcome.artifact or None,
                "response": outcome.response or None,
            },
            {
                "reason": outcome.reason,
                "retry_in_seconds": round(delay, 3),
                "artifact": outcome.artifact,
                "response": outcome.response,
            },
        )
    else:
        # Dead-lettered: a terminal status that says why.
        reason = outcome.reason
        if outcome.retryable:
            reason = f"gave up after {action.attempts} attempt(s): {reason}"
        target, values, data = (
            ActionStatus.FAILED,
            {"status_reason": reason, "artifact": outcome.artifact or None, "response": outcome.response or None},
            {"reason": reason, "artifact": outcome.artifact, "response": outcome.response},
        )
    return target, values, data
