"""Durable outbound calls: Slack messages and agent callbacks, retried until they land.

A delivery row is written in the same transaction as the change it reports, so nothing that
must be said lives only in memory. Whoever processes deliveries (the request that caused them,
right after its commit; the embedded sweeper; the Celery `deliver_notifications` task) takes a
lease on one row at a time, makes the call outside any transaction, and records the outcome.
Failures back off exponentially, or for as long as the peer's Retry-After asks, until
`delivery_max_attempts`; then the row is dead and the reason is kept.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, or_, select

from outbox.approvals.models import Delivery, DeliveryState
from outbox.runtime import Runtime
from outbox.sqltypes import new_id, utcnow

log = structlog.get_logger(__name__)

KIND_SLACK_MESSAGE = "slack.message"
KIND_SLACK_EPHEMERAL = "slack.ephemeral"
KIND_SLACK_VIEW = "slack.view"
KIND_CALLBACK = "callback"

# A claimed delivery is someone else's to retry only after this, even if its worker died.
_LEASE = timedelta(seconds=120)


@dataclass(frozen=True, slots=True)
class Delivered:
    note: str = ""


@dataclass(frozen=True, slots=True)
class RetryLater:
    """The peer is unavailable or asked us to slow down; `retry_after` is its Retry-After."""

    error: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Retrying cannot help (bad token, unknown channel, receiver refused with 4xx)."""

    error: str


DeliveryResult = Delivered | RetryLater | GiveUp


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: str
    kind: str
    subject_id: str
    payload: dict[str, Any]
    generation: int
    attempts: int
    created_at: datetime


Handler = Callable[[Runtime, ClaimedDelivery], DeliveryResult]


@dataclass
class DeliveryReport:
    delivered: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def enqueue(
    session: Session,
    *,
    kind: str,
    subject_id: str,
    payload: dict[str, Any] | None = None,
    coalesce_key: str | None = None,
) -> str | None:
    """Add a delivery in the caller's transaction. Returns its id when a new row was written.

    With `coalesce_key`, at most one pending delivery exists per key: a second enqueue only bumps
    the pending row's generation (its handler renders the latest state anyway), and keeps its
    schedule, so a peer's Retry-After is still honoured.
    """
    now = utcnow()
    delivery_id = new_id("dlv")
    values: dict[str, Any] = {
        "id": delivery_id,
        "kind": kind,
        "subject_id": subject_id,
        "pending_key": coalesce_key,
        "payload": payload or {},
        "state": DeliveryState.PENDING.value,
        "generation": 1,
        "attempts": 0,
        "not_before": now,
        "created_at": now,
        "updated_at": now,
    }
    if coalesce_key is None:
        session.add(Delivery(**values))
        session.flush()
        return delivery_id
    table = Delivery.__table__  # type: ignore[attr-defined]
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(table)
        .values(**values)
        .on_conflict_do_update(
            index_elements=[table.c.pending_key],
            set_={"generation": table.c.generation + 1, "updated_at": now},
        )
    )
    session.execute(statement)
    existing = session.exec(select(Delivery.id).where(col(Delivery.pending_key) == coalesce_key)).first()
    return delivery_id if existing == delivery_id else None


def pending_ids(session: Session, *, subject_id: str) -> list[str]:
    return list(
        session.exec(
            select(Delivery.id).where(
                (col(Delivery.subject_id) == subject_id) & (col(Delivery.state) == DeliveryState.PENDING.value)
            )
        ).all()
    )


def _handler(kind: str) -> Handler:
    if kind.startswith("slack."):
        from outbox.slack.sync import handle_slack_delivery

        return handle_slack_delivery
    if kind == KIND_CALLBACK:
        from outbox.approvals.callbacks import deliver_callback

        return deliver_callback
    raise LookupError(f"no handler for delivery kind {kind!r}")


def _family(kind: str) -> str:
    return kind.split(".", 1)[0]


def backoff_seconds(runtime: Runtime, attempt: int) -> float:
    settings = runtime.settings
    ceiling = min(settings.delivery_retry_max_seconds, settings.delivery_retry_base_seconds * 2 ** max(attempt - 1, 0))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 (jitter, not a secret)


def any_due(runtime: Runtime) -> bool:
    """Whether some delivery is waiting to be made now (cheap; the index covers it)."""
    now = utcnow()
    with runtime.db.session() as session:
        return (
            session.exec(
                select(Delivery.id)
                .where(
                    (col(Delivery.state) == DeliveryState.PENDING.value)
                    & (col(Delivery.not_before) <= now)
                    & or_(col(Delivery.lease_until).is_(None), col(Delivery.lease_until) < now)
                )
                .limit(1)
            ).first()
            is not None
        )


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
    now = utcnow()
    with runtime.db.session() as session:
        query = select(Delivery.id, Delivery.kind).where(
            (col(Delivery.state) == DeliveryState.PENDING.value)
            & (col(Delivery.not_before) <= now)
            & or_(col(Delivery.lease_until).is_(None), col(Delivery.lease_until) < now)
        )
        if ids is not None:
            query = query.where(col(Delivery.id).in_(list(ids)))
        due = session.exec(query.order_by(col(Delivery.not_before)).limit(limit)).all()
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
            result = _handler(claimed.kind)(runtime, claimed)
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
        row = session.exec(select(Delivery).where(col(Delivery.id) == delivery_id).with_for_update()).first()
        if (
            row is None
            or row.state != DeliveryState.PENDING.value
            or row.not_before > now
            or (row.lease_until is not None and row.lease_until >= now)
        ):
            return None
        row.attempts += 1
        row.lease_until = now + _LEASE
        row.updated_at = now
        session.add(row)
        return ClaimedDelivery(
            id=row.id,
            kind=row.kind,
            subject_id=row.subject_id,
            payload=dict(row.payload),
            generation=row.generation,
            attempts=row.attempts,
            created_at=row.created_at,
        )


def _record(runtime: Runtime, claimed: ClaimedDelivery, result: DeliveryResult) -> DeliveryState | None:
    now = utcnow()
    with runtime.db.session() as session:
        row = session.exec(select(Delivery).where(col(Delivery.id) == claimed.id).with_for_update()).first()
        if row is None or row.state != DeliveryState.PENDING.value or row.attempts != claimed.attempts:
            return None  # our lease expired and someone else took the row
        row.lease_until = None
        row.updated_at = now
        if isinstance(result, Delivered):
            if row.generation != claimed.generation:
                # Something changed while we were calling: render again, at once.
                row.not_before = now
                row.attempts = 0
                session.add(row)
                return DeliveryState.PENDING
            row.state = DeliveryState.DONE.value
            row.pending_key = None
            row.done_at = now
            row.last_error = None
            session.add(row)
            return DeliveryState.DONE
        row.last_error = result.error[:2000]
        if isinstance(result, GiveUp) or row.attempts >= runtime.settings.delivery_max_attempts:
            row.state = DeliveryState.DEAD.value
            row.pending_key = None
            row.done_at = now
            session.add(row)
            log.warning("delivery.dead", delivery_id=row.id, kind=row.kind, attempts=row.attempts, error=result.error)
            return DeliveryState.DEAD
        delay = result.retry_after if result.retry_after is not None else backoff_seconds(runtime, row.attempts)
        row.not_before = now + timedelta(seconds=max(delay, 0.0))
        session.add(row)
        log.info("delivery.retrying", delivery_id=row.id, kind=row.kind, in_seconds=round(delay, 3), error=result.error)
        return DeliveryState.PENDING


def retry_now(session: Session, delivery_ids: Sequence[str]) -> None:
    """Make pending deliveries due at once (an operator asked; tests)."""
    session.execute(
        update(Delivery)
        .where(col(Delivery.id).in_(list(delivery_ids)) & (col(Delivery.state) == DeliveryState.PENDING.value))
        .values(not_before=utcnow(), lease_until=None)
    )
