"""The SQL of the delivery queue. Claims and their outcomes go through the leased-job statements
of outbox/jobs/repository.py; this module adds what is particular to deliveries: coalesced
inserts, and the queries that find due work."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, or_, select

from outbox.deliveries.models import Delivery, DeliveryState
from outbox.jobs.repository import JobTable
from outbox.sqltypes import new_id, utcnow

DELIVERY_JOBS = JobTable.of(
    Delivery.__table__,  # type: ignore[attr-defined]
    status="state",
    lease_until="lease_until",
)


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
        "payload": payload or {},
        "state": DeliveryState.PENDING.value,
        "generation": 1,
        "attempts": 0,
        "not_before": now,
        "created_at": now,
        "updated_at": now,
    }
    written = _insert(session, values, coalesce_key=coalesce_key)
    return delivery_id if written else None


def _insert(session: Session, values: dict[str, Any], *, coalesce_key: str | None) -> bool:
    """Insert a pending delivery; with `coalesce_key`, bump the generation of the pending row that
    already has that key instead. Returns whether a new row was written."""
    if coalesce_key is None:
        session.add(Delivery(**values))
        session.flush()
        return True
    table = DELIVERY_JOBS.table
    dialect_insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        dialect_insert(table)
        .values(pending_key=coalesce_key, **values)
        .on_conflict_do_update(
            index_elements=[table.c.pending_key],
            set_={"generation": table.c.generation + 1, "updated_at": values["updated_at"]},
        )
    )
    existing = session.exec(select(Delivery.id).where(col(Delivery.pending_key) == coalesce_key)).first()
    return bool(existing == values["id"])


def pending_ids(session: Session, *, subject_id: str) -> list[str]:
    return list(
        session.exec(
            select(Delivery.id).where(
                (col(Delivery.subject_id) == subject_id) & (col(Delivery.state) == DeliveryState.PENDING.value)
            )
        ).all()
    )


def due(session: Session, *, now: datetime, ids: Sequence[str] | None, limit: int) -> list[tuple[str, str]]:
    """(id, kind) of pending deliveries that are due and not leased, soonest first."""
    query = select(Delivery.id, Delivery.kind).where(
        (col(Delivery.state) == DeliveryState.PENDING.value)
        & (col(Delivery.not_before) <= now)
        & or_(col(Delivery.lease_until).is_(None), col(Delivery.lease_until) < now)
    )
    if ids is not None:
        query = query.where(col(Delivery.id).in_(list(ids)))
    return [(row[0], row[1]) for row in session.exec(query.order_by(col(Delivery.not_before)).limit(limit)).all()]


def make_due(session: Session, delivery_ids: Sequence[str], *, now: datetime) -> None:
    session.execute(
        update(Delivery)
        .where(col(Delivery.id).in_(list(delivery_ids)) & (col(Delivery.state) == DeliveryState.PENDING.value))
        .values(not_before=now, lease_until=None)
    )
