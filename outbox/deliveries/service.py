"""Durable outbound calls: Slack messages and agent callbacks, retried until they land.

A delivery row is written in the same transaction as the change it reports, so nothing that
must be said lives only in memory. Whoever processes deliveries (the request that caused them,
right after its commit; the embedded sweeper; the Celery `deliver_notifications` task) takes a
lease on one row at a time, makes the call outside any transaction, and records the outcome.
Failures back off exponentially with full jitter, or for as long as the peer's Retry-After asks,
until `delivery_max_attempts`; then the row is dead and the reason is kept. Claims, leases,
backoff and dead-lettering are the leased-job primitive (outbox/jobs/), shared with actions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlmodel import Session, col

from outbox.deliveries import repository
from outbox.deliveries.models import Delivery, DeliveryState
from outbox.deliveries.repository import enqueue, pending_ids
from outbox.deliveries.results import (
    KIND_CALLBACK,
    KIND_SLACK_EPHEMERAL,
    KIND_SLACK_MESSAGE,
    KIND_SLACK_VIEW,
    ClaimedDelivery,
    Delivered,
    DeliveryResult,
    GiveUp,
    RetryLater,
)
from outbox.jobs import repository as jobs
from outbox.jobs.backoff import RetryPolicy
from outbox.jobs.repository import ExpiredLease
from outbox.sqltypes import utcnow

if TYPE_CHECKING:
    from outbox.runtime import Runtime

# The one way in for the rest of the outbox: write a delivery in your transaction (`enqueue`),
# make the due ones (`deliver_due`); channels answer with the result types.
__all__ = [
    "KIND_CALLBACK",
    "KIND_SLACK_EPHEMERAL",
    "KIND_SLACK_MESSAGE",
    "KIND_SLACK_VIEW",
    "ClaimedDelivery",
    "Delivered",
    "DeliveryReport",
    "DeliveryResult",
    "GiveUp",
    "RetryLater",
    "any_due",
    "deliver_due",
    "enqueue",
    "pending_ids",
    "redrive_expired",
    "retry_now",
]

log = structlog.get_logger(__name__)

# A claimed delivery is someone else's to retry only after this, even if its worker died.
_LEASE = timedelta(seconds=120)


# A channel: makes one claimed delivery and says how it went. The channels, by family (the kind up
# to its first dot), are wired by the composition root (`Runtime.build`): Slack's lives in
# outbox/slack/, an edge above this package.
Handler = Callable[["Runtime", ClaimedDelivery], DeliveryResult]


@dataclass
class DeliveryReport:
    delivered: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def _handler(runtime: Runtime, kind: str) -> Handler:
    """The channel that makes a delivery of `kind`, from the table the composition root wired."""
    handler = runtime.delivery_handlers.get(_family(kind))
    if handler is None:
        raise LookupError(f"no handler for delivery kind {kind!r}")
    return handler


def _family(kind: str) -> str:
    return kind.split(".", 1)[0]


def delivery_retries(runtime: Runtime) -> RetryPolicy:
    settings = runtime.settings
    return RetryPolicy(
        max_attempts=settings.delivery_max_attempts,
        base_seconds=settings.delivery_retry_base_seconds,
        cap_seconds=settings.delivery_retry_max_seconds,
    )


def any_due(runtime: Runtime) -> bool:
    """Whether some delivery is waiting to be made now (cheap; the index covers it)."""
    with runtime.db.session() as session:
        return bool(repository.due(session, now=utcnow(), ids=None, limit=1))


def deliver_due(
    runtime: Runtime, *, ids: Sequence[str] | None = None, limit: int = 50, budget_seconds: float | None = None
) -> DeliveryReport:
    """Make the due calls (all of them, or only `ids`); never raises for a failed call.

    With `budget_seconds`, no new call starts after that long (the sweeper must not be held up
    by a peer that times out); what is left waits for the next pass.
    """
    report = DeliveryReport()
    if ids is not None and not ids:
        return report
    with runtime.db.session() as session:
        due = repository.due(session, now=utcnow(), ids=ids, limit=limit)
    # A peer that answered "slow down", or Slack being unreachable, is not called again in this pass.
    paused: set[str] = set()
    deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
    for delivery_id, kind in due:
        if deadline is not None and time.monotonic() > deadline:
            break
        if _family(kind) in paused:
            continue
        claimed = _claim(runtime, delivery_id)
        if claimed is None:
            continue
        try:
            result = _handler(runtime, claimed.kind)(runtime, claimed)
        except Exception as exc:  # a handler bug must not stop the other deliveries
            log.exception("delivery.crashed", delivery_id=claimed.id, kind=claimed.kind)
            result = RetryLater(f"{type(exc).__name__}: {exc}")
        if isinstance(result, RetryLater) and (result.retry_after is not None or _family(claimed.kind) == "slack"):
            paused.add(_family(claimed.kind))
        state = _record(runtime, claimed, result)
        if state == DeliveryState.DONE:
            report.delivered.append(claimed.id)
        elif state == DeliveryState.DEAD:
            report.dead.append(claimed.id)
        elif state == DeliveryState.PENDING:
            report.retrying.append(claimed.id)
        if not isinstance(result, Delivered):
            report.errors[claimed.id] = result.error
    return report


def _claim(runtime: Runtime, delivery_id: str) -> ClaimedDelivery | None:
    now = utcnow()
    with runtime.db.session() as session:
        won = jobs.claim(
            session,
            repository.DELIVERY_JOBS,
            delivery_id,
            claimable=[DeliveryState.PENDING.value],
            now=now,
            lease=_LEASE,
            # A delivery whose worker died during its last attempt is the sweeper's to dead-letter.
            below_attempts=runtime.settings.delivery_max_attempts,
        )
        row = session.get(Delivery, delivery_id) if won is not None else None
        if won is None or row is None:
            return None
        return ClaimedDelivery(
            id=row.id,
            kind=row.kind,
            subject_id=row.subject_id,
            payload=dict(row.payload),
            generation=row.generation,
            attempts=won.attempt,
            created_at=row.created_at,
            lease=won,
        )


def _record(runtime: Runtime, claimed: ClaimedDelivery, result: DeliveryResult) -> DeliveryState | None:
    """Settle the claim with its outcome; None if our lease expired and someone else took the row."""
    now = utcnow()
    retries = delivery_retries(runtime)
    pending = DeliveryState.PENDING.value
    with runtime.db.session() as session:

        def settle(values: dict[str, Any], where: Any = None) -> bool:
            return jobs.settle(
                session, repository.DELIVERY_JOBS, claimed.lease, held=pending, now=now, values=values, where=where
            )

        if isinstance(result, Delivered):
            done = {"state": DeliveryState.DONE.value, "pending_key": None, "done_at": now, "last_error": None}
            if settle(done, where=col(Delivery.generation) == claimed.generation):
                return DeliveryState.DONE
            # Something changed while we were calling: render again, at once.
            return DeliveryState.PENDING if settle({"not_before": now, "attempts": 0}) else None
        error = result.error[:2000]
        if isinstance(result, GiveUp) or retries.exhausted(claimed.attempts):
            dead = {"state": DeliveryState.DEAD.value, "pending_key": None, "done_at": now, "last_error": error}
            if not settle(dead):
                return None
            log.warning(
                "delivery.dead",
                delivery_id=claimed.id,
                kind=claimed.kind,
                attempts=claimed.attempts,
                error=result.error,
            )
            return DeliveryState.DEAD
        delay = result.retry_after if result.retry_after is not None else retries.delay(claimed.attempts)
        if not settle({"not_before": now + timedelta(seconds=max(delay, 0.0)), "last_error": error}):
            return None
        log.info(
            "delivery.retrying",
            delivery_id=claimed.id,
            kind=claimed.kind,
            in_seconds=round(delay, 3),
            error=result.error,
        )
        return DeliveryState.PENDING


def redrive_expired(runtime: Runtime, *, limit: int = 500) -> list[str]:
    """The sweeper's half: deliveries whose worker stopped answering are released to be made
    again, or dead-lettered if that was their last attempt. Returns the ids dead-lettered."""
    now = utcnow()

    def values_for(lease: ExpiredLease, dead: bool) -> dict[str, Any]:
        if not dead:
            return {}
        return {
            "state": DeliveryState.DEAD.value,
            "pending_key": None,
            "done_at": now,
            "last_error": f"the worker making attempt {lease.attempt} stopped answering (lease expired); "
            "no attempts left",
        }

    with runtime.db.session() as session:
        moved = jobs.redrive_expired(
            session,
            repository.DELIVERY_JOBS,
            held=DeliveryState.PENDING.value,
            now=now,
            exhausted=delivery_retries(runtime).exhausted,
            values_for=values_for,
            limit=limit,
        )
    return [lease.job_id for lease, dead in moved if dead]


def retry_now(session: Session, delivery_ids: Sequence[str]) -> None:
    """Make pending deliveries due at once (an operator asked; tests)."""
    repository.make_due(session, delivery_ids, now=utcnow())
