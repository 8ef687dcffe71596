"""The sweeper: repairs everything the broker may have lost. Runs periodically (Celery beat in
production, a thread in the embedded server).

- queued actions that are due and were not claimed soon after publishing are published again;
- deferred actions whose window has reopened go back to queued;
- running actions whose lease expired (a worker crashed) go back to queued, or fail once they
  have used all their attempts;
- approval requests past their expiry fail closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlmodel import col, or_, select

from outbox import metrics
from outbox.actions.lifecycle import transition
from outbox.actions.models import Action, ActionStatus
from outbox.approvals.sweeper import sweep_approvals
from outbox.audit.service import record_event
from outbox.execution.leases import ACTION_JOBS, action_retries
from outbox.idempotency.service import purge_expired
from outbox.jobs import repository as jobs
from outbox.jobs.repository import ExpiredLease
from outbox.sqltypes import utcnow

if TYPE_CHECKING:
    from outbox.runtime import Runtime

BATCH = 500
SWEEPER = "sweeper"


@dataclass
class SweepReport:
    republished: list[str] = field(default_factory=list)
    resumed: int = 0
    lease_expired: int = 0
    exhausted: int = 0
    approvals_expired: int = 0


def sweep_once(runtime: Runtime) -> SweepReport:
    report = SweepReport()
    now = utcnow()
    report.resumed = _resume_deferred(runtime, now)
    report.lease_expired, report.exhausted = _redrive_expired_leases(runtime, now)
    # Approvals (outbox/approvals/sweeper.py): expiry fails closed; callbacks and Slack message
    # updates are queued for changed actions and, in the embedded mode, delivered here.
    report.approvals_expired += sweep_approvals(runtime)

    report.republished = _republish_due(runtime, now)
    if report.republished:
        runtime.dispatcher.publish(report.republished)
    metrics.record_sweep(
        republished=len(report.republished),
        resumed=report.resumed,
        lease_expired=report.lease_expired,
        exhausted=report.exhausted,
        approval_expired=report.approvals_expired,
    )
    return report


def _resume_deferred(runtime: Runtime, now: datetime) -> int:
    """Deferred actions whose window has reopened go back to queued."""
    resumed = 0
    with runtime.db.session() as session:
        for action_id in session.exec(
            select(Action.id)
            .where((col(Action.status) == ActionStatus.DEFERRED.value) & (col(Action.not_before) <= now))
            .limit(BATCH)
        ).all():
            if transition(
                session,
                action_id,
                from_statuses=[ActionStatus.DEFERRED],
                to_status=ActionStatus.QUEUED,
                actor=SWEEPER,
                event_type="action.resumed",
                not_before=None,
                last_published_at=None,
            ):
                resumed += 1
    return resumed


def _redrive_expired_leases(runtime: Runtime, now: datetime) -> tuple[int, int]:
    """Running actions whose worker stopped answering go back to queued, or are dead-lettered
    as failed once they used all their attempts. Returns (re-queued, dead-lettered)."""
    requeued = dead_lettered = 0
    retries = action_retries(runtime.settings)

    def lease_expired(lease: ExpiredLease, dead: bool) -> dict[str, Any]:
        values: dict[str, Any] = {
            "status": (ActionStatus.FAILED if dead else ActionStatus.QUEUED).value,
            "last_published_at": None,
            "status_reason": (
                f"the worker running attempt {lease.attempt} stopped answering (lease expired)"
                + ("; no attempts left" if dead else "; queued again")
            ),
        }
        if dead:
            values["finished_at"] = now
        return values

    with runtime.db.session() as session:
        redriven = jobs.redrive_expired(
            session,
            ACTION_JOBS,
            held=ActionStatus.RUNNING.value,
            now=now,
            exhausted=retries.exhausted,
            values_for=lease_expired,
            limit=BATCH,
        )
        for lease, dead in redriven:
            record_event(
                session,
                event_type="action.lease_expired",
                actor=SWEEPER,
                action_id=lease.job_id,
                from_status=ActionStatus.RUNNING.value,
                to_status=(ActionStatus.FAILED if dead else ActionStatus.QUEUED).value,
                data={"lease_owner": lease.owner, "attempt": lease.attempt},
            )
            dead_lettered += int(dead)
            requeued += int(not dead)
    return requeued, dead_lettered


def _republish_due(runtime: Runtime, now: datetime) -> list[str]:
    """Queued actions that are due and were not claimed soon after publishing are published
    again (the broker may have lost the message); expired idempotency records go too.

    The longer an action has waited, the longer the sweeper waits before publishing it again:
    at least `republish_after_seconds`, and at least half the time it has been due. A lost
    message is still re-sent within seconds, but a backlog (workers busy, messages not lost)
    gets a few duplicates per action (logarithmic in its wait), not one every few seconds that
    the workers would then spend their time claiming in vain."""
    after = timedelta(seconds=runtime.settings.republish_after_seconds)
    with runtime.db.session() as session:
        candidates = session.exec(
            select(Action.id, Action.created_at, Action.not_before, Action.last_published_at)
            .where(
                (col(Action.status) == ActionStatus.QUEUED.value)
                & or_(col(Action.not_before).is_(None), col(Action.not_before) <= now)
                & or_(col(Action.last_published_at).is_(None), col(Action.last_published_at) < now - after)
            )
            .order_by(col(Action.last_published_at).asc().nulls_first(), col(Action.created_at))
            .limit(BATCH)
        ).all()
        due = [row[0] for row in candidates if _message_may_be_lost(row, now, after)]
        if due:
            session.execute(update(Action).where(col(Action.id).in_(due)).values(last_published_at=now))
        purge_expired(session)
    return due


def _message_may_be_lost(row: Any, now: datetime, after: timedelta) -> bool:
    """`row` is (id, created_at, not_before, last_published_at)."""
    _, created_at, not_before, last_published_at = row
    if last_published_at is None:
        return True
    due_since = max(created_at, not_before) if not_before is not None else created_at
    return bool(now - last_published_at >= max(after, (now - due_since) / 2))
