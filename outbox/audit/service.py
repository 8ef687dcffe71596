"""The one writer of audit events, and the verifier of their hash chain.

Every state transition calls `record_event` inside the transaction that changes the state, so an
event exists if and only if the transition committed. The request inserts it unsealed (no chain
lock, no read of the tail: this is on every write's hot path); the sealer
(`outbox.audit.sealer.seal_pending`) gives it its chain position `seq` and its links about a
second later. Each sealed event stores the hash of the one before it in `seq` order: editing,
inserting or deleting a sealed row breaks the chain at that point.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event, func, insert, select
from sqlalchemy.orm import SessionTransaction
from sqlmodel import Session, col
from sqlmodel import select as select_models

from outbox.audit.models import AuditEvent
from outbox.canonical import canonical_json, sha256_hex
from outbox.sqltypes import utcnow

GENESIS_HASH = "0" * 64


def link_hash(
    prev_hash: str,
    *,
    action_id: str | None,
    event_type: str,
    actor: str,
    from_status: str | None,
    to_status: str | None,
    data_json: str,
    created_at: datetime,
) -> str:
    """The hash of an event that follows the one whose hash is `prev_hash` (docs/audit.md, "Event
    hashes"); unchanged since the first chain, so every stored hash stays verifiable."""
    header = canonical_json(
        {
            "action_id": action_id,
            "event_type": event_type,
            "actor": actor,
            "from_status": from_status,
            "to_status": to_status,
            "created_at": created_at.isoformat(timespec="microseconds"),
        }
    )
    return sha256_hex(f"{prev_hash}\n{header}\n{data_json}")


def event_hash(audit_event: AuditEvent) -> str:
    """The hash a sealed event should carry, recomputed from its columns (docs/audit.md)."""
    if audit_event.prev_hash is None:
        raise ValueError(f"event {audit_event.id} is not sealed yet: it has no prev_hash")
    return link_hash(
        audit_event.prev_hash,
        action_id=audit_event.action_id,
        event_type=audit_event.event_type,
        actor=audit_event.actor,
        from_status=audit_event.from_status,
        to_status=audit_event.to_status,
        data_json=audit_event.data_json,
        created_at=audit_event.created_at,
    )


def record_event(
    session: Session,
    *,
    event_type: str,
    actor: str,
    action_id: str | None = None,
    from_status: str | None = None,
    to_status: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Record one event as part of the caller's transaction.

    The event is inserted when the transaction commits (`_insert_recorded_events`), so it exists
    if and only if the state change it describes committed; the sealer chains it afterwards.
    """
    session.info.setdefault(_PENDING, []).append(
        {
            "action_id": action_id,
            "event_type": event_type,
            "actor": actor,
            "from_status": from_status,
            "to_status": to_status,
            "data_json": canonical_json(data or {}),
        }
    )


_PENDING = "outbox_audit_pending"


@event.listens_for(Session, "before_commit")
def _insert_recorded_events(session: Session) -> None:
    """Insert the transaction's events, unsealed, as the last thing before commit.

    Only an INSERT: no lock and no read of the chain's tail, so concurrent transactions (and
    PostgreSQL replicas) never wait for each other here. `created_at` is fixed now, at the
    commit that makes the event true, and is part of the hash the sealer computes later.
    """
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    # Microsecond precision survives both backends, so the hash can be recomputed from the row.
    created_at = utcnow()
    # A statement built once, run on the connection (no ORM unit of work): every write
    # transaction that changes a state ends here.
    session.connection().execute(_INSERT_EVENTS, [{**fields, "created_at": created_at} for fields in pending])


_EVENTS = AuditEvent.__table__  # type: ignore[attr-defined]
_INSERT_EVENTS = insert(_EVENTS)


@event.listens_for(Session, "after_transaction_create")
def _mark_savepoint(session: Session, transaction: SessionTransaction) -> None:
    # How many events were recorded when a savepoint began: rolling it back forgets the rest.
    if transaction.nested:
        session.info.setdefault(_SAVEPOINT_MARKS, {})[transaction] = len(session.info.get(_PENDING, ()))


@event.listens_for(Session, "after_soft_rollback")
def _forget_savepoint_events(session: Session, previous_transaction: SessionTransaction) -> None:
    # The events of a savepoint rolled back (a refused budget reservation, a write of a group
    # commit that failed) describe changes that never happen; those recorded before it stay.
    mark = session.info.get(_SAVEPOINT_MARKS, {}).pop(previous_transaction, None)
    if mark is not None and _PENDING in session.info:
        del session.info[_PENDING][mark:]


_SAVEPOINT_MARKS = "outbox_audit_savepoint_marks"


@event.listens_for(Session, "after_transaction_end")
def _forget_pending_events(session: Session, transaction: SessionTransaction) -> None:
    # Only the outermost transaction's end drops unsealed events: a savepoint rolled back inside
    # it (a refused budget reservation) must not take the transaction's events with it.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)
        session.info.pop(_SAVEPOINT_MARKS, None)


@dataclass(frozen=True, slots=True)
class ChainBreak:
    event_id: int
    problem: str


def iter_events(session: Session, *, since: datetime | None = None, batch: int = 1000) -> Iterator[AuditEvent]:
    """The sealed events in chain (`seq`) order; events not sealed yet are not part of it."""
    last_seq = 0
    while True:
        query = select_models(AuditEvent).where(col(AuditEvent.seq) > last_seq)
        if since is not None:
            query = query.where(col(AuditEvent.created_at) >= since)
        rows = session.exec(query.order_by(col(AuditEvent.seq)).limit(batch)).all()
        if not rows:
            return
        yield from rows
        last_seq = rows[-1].seq or last_seq


def unsealed_events(session: Session) -> int:
    """How many committed events the sealer has not chained yet (they are not verified)."""
    return int(session.execute(_COUNT_UNSEALED).scalar_one())


_COUNT_UNSEALED = select(func.count()).select_from(_EVENTS).where(_EVENTS.c.seq.is_(None))


def broken_link(audit_event: AuditEvent, expected_prev: str) -> ChainBreak | None:
    """Why a sealed event does not continue a chain whose last hash is `expected_prev`, if it does not."""
    assert audit_event.id is not None
    if audit_event.prev_hash != expected_prev:
        return ChainBreak(
            audit_event.id,
            "prev_hash does not match the preceding event's hash: "
            "an event was edited, inserted or deleted just before it",
        )
    if event_hash(audit_event) != audit_event.hash:
        return ChainBreak(audit_event.id, "content does not match its hash: the event was edited")
    return None


def verify_chain(session: Session) -> tuple[int, ChainBreak | None]:
    """Walk the sealed chain from the start, read-only; return how many events were checked and
    the first break. Unsealed events are not a break: `unsealed_events` counts them, and
    `seal_pending` chains them."""
    expected_prev = GENESIS_HASH
    count = 0
    for audit_event in iter_events(session):
        count += 1
        broken = broken_link(audit_event, expected_prev)
        if broken is not None:
            return count, broken
        expected_prev = audit_event.hash or ""
    return count, None
