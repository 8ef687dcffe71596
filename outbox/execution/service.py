"""Running one action: claim, execute, record. The same code runs in Celery and embedded workers.

A worker claims an action with a conditional update (queued → running, with a lease). A second
delivery of the same message finds the action no longer queued and does nothing. The tool runs
outside any transaction; its outcome is recorded in one transaction with its audit event.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from datetime import timedelta
from typing import Any

import structlog
from sqlmodel import col

from outbox import metrics
from outbox.actions.lifecycle import transition
from outbox.actions.models import Action, ActionStatus
from outbox.agents.models import Agent
from outbox.audit.service import record_event
from outbox.policy.matching import Subject
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from outbox.tools.base import Deferred, ExecutionContext, Failed, Succeeded, ToolOutcome

log = structlog.get_logger(__name__)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def retry_delay(settings_base: float, settings_max: float, attempt: int) -> float:
    """Exponential backoff with full jitter (attempt 1 → up to base, doubling, capped)."""
    ceiling = min(settings_max, settings_base * (2 ** max(attempt - 1, 0)))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography


def claim(runtime: Runtime, action_id: str, worker: str) -> Action | None:
    """queued → running with a lease, or None if someone else has it or it is not due."""
    settings = runtime.settings
    now = utcnow()
    with runtime.db.session() as session:
        action = session.get(Action, action_id)
        if action is None or action.status != ActionStatus.QUEUED:
            return None
        if action.not_before is not None and action.not_before > now:
            return None
        moved = transition(
            session,
            action_id,
            from_statuses=[ActionStatus.QUEUED],
            to_status=ActionStatus.RUNNING,
            actor=f"worker:{worker}",
            data={"attempt": action.attempts + 1},
            extra_condition=(col(Action.attempts) == action.attempts),
            attempts=action.attempts + 1,
            lease_owner=worker,
            lease_expires_at=now + timedelta(seconds=settings.lease_seconds),
            not_before=None,
        )
        if not moved:
            return None
        session.refresh(action)
        return action


def run_action(runtime: Runtime, action_id: str) -> str | None:
    """Execute an action if it can be claimed; return the status it ended in (None if not run)."""
    worker = worker_identity()
    action = claim(runtime, action_id, worker)
    if action is None:
        return None
    bound = log.bind(action_id=action_id, tool=action.tool, attempt=action.attempts)
    metrics.note_worker_policy(runtime.policy.current)
    started = time.perf_counter()
    outcome = _execute(runtime, action)
    elapsed = time.perf_counter() - started
    status = _record_outcome(runtime, action, worker, outcome)
    metrics.observe_execution(action.tool, status, elapsed)
    bound.info("action.executed", status=status)
    return status


def _execute(runtime: Runtime, action: Action) -> ToolOutcome:
    active = runtime.policy.current
    tool = active.tools.get(action.tool)
    if tool is None:
        return Failed(f"the tool {action.tool!r} is no longer defined by the running policy", retryable=False)
    with runtime.db.session() as session:
        agent = session.get(Agent, action.agent_id)
    if agent is None or agent.revoked_at is not None:
        return Failed("the agent's access was revoked before execution", retryable=False)
    try:
        args = tool.parse_args(action.args)
        # Policy is checked again at execution: a call that policy denies now does not run,
        # whatever it was when it was submitted.
        targets = tool.targets(args)
        decision = active.snapshot.decide(Subject(f"agent:{agent.name}", tuple(agent.roles)), targets)
    except Exception as exc:  # definitions may have changed under a queued action
        return Failed(f"the arguments no longer validate: {exc}", retryable=False)
    if decision.effect == "deny" or (decision.effect == "approve" and action.decision_effect == "allow"):
        return Failed(
            f"policy {decision.policy_version} no longer allows this call: {decision.explain()}",
            retryable=False,
        )
    if action.decision_effect == "approve":
        # What runs must be what was approved (the digest), approved by people the running
        # policy still accepts as approvers; otherwise nothing runs.
        from outbox.approvals.service import verify_for_execution

        refusal = verify_for_execution(runtime, action, agent=f"agent:{agent.name}", targets=targets)
        if refusal is not None:
            return Failed(refusal, retryable=False)
    preview_fn = getattr(tool, "preview", None)
    if callable(preview_fn) and action.preview is not None:
        recorded = {k: v for k, v in action.preview.items() if k != "dry_run"}
        if preview_fn(args) != recorded:
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


def _record_outcome(runtime: Runtime, action: Action, worker: str, outcome: ToolOutcome) -> str:
    settings = runtime.settings
    owned = col(Action.lease_owner) == worker
    actor = f"worker:{worker}"
    target: ActionStatus
    values: dict[str, Any]
    data: dict[str, Any]
    with runtime.db.session() as session:
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
        elif outcome.retryable and action.attempts < settings.max_attempts:
            delay = retry_delay(settings.retry_base_seconds, settings.retry_max_seconds, action.attempts)
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
            reason = outcome.reason
            if outcome.retryable:
                reason = f"gave up after {action.attempts} attempt(s): {reason}"
            target, values, data = (
                ActionStatus.FAILED,
                {"status_reason": reason, "artifact": outcome.artifact or None, "response": outcome.response or None},
                {"reason": reason, "artifact": outcome.artifact, "response": outcome.response},
            )
        moved = transition(
            session,
            action.id,
            from_statuses=[ActionStatus.RUNNING],
            to_status=target,
            actor=actor,
            data={"attempt": action.attempts, **data},
            extra_condition=owned,
            lease_owner=None,
            lease_expires_at=None,
            **values,
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
    return target.value
