"""The one writer of audit events, and the verifier of their hash chain.

Every state transition calls `record_event` inside the transaction that changes the state, so an
event exists if and only if the transition committed. Each event stores the hash of the previous
one: editing, inserting or deleting a row breaks the chain at that point.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event, insert, select, text
from sqlalchemy.orm import SessionTransaction
from sqlmodel import Session, col
from sqlmodel import select as select_models

from outbox.audit.models import AuditEvent
from outbox.canonical import canonical_json, sha256_hex
from outbox.sqltypes import utcnow

GENESIS_HASH = "0" * 64
# Arbitrary constant naming the PostgreSQL advisory lock that serialises chain appends.
_CHAIN_LOCK_ID = 0x0A0D17


def _event_hash(
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
    """The hash a stored event should carry, recomputed from its columns (docs/audit.md)."""
    return _event_hash(
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

    The event is chained when the transaction commits (`_seal_pending_events`), so it exists if
    and only if the state change it describes committed.
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
def _seal_pending_events(session: Session) -> None:
    """Append the transaction's events to the chain, as the last thing before commit.

    Appends are serialised (an advisory lock on PostgreSQL, BEGIN IMMEDIATE on SQLite) so that two
    transactions never extend the same tail; sealing at commit keeps that lock for the shortest
    possible time instead of for the whole transaction.
    """
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _CHAIN_LOCK_ID})
    connection = session.connection()
    prev_hash = connection.execute(_LAST_HASH).scalar() or GENESIS_HASH
    rows = []
    for fields in pending:
        # Microsecond precision survives both backends, so the hash can be recomputed from the row.
        created_at = utcnow()
        digest = _event_hash(prev_hash, created_at=created_at, **fields)
        rows.append({**fields, "created_at": created_at, "prev_hash": prev_hash, "hash": digest})
        prev_hash = digest
    # Statements built once, run on the connection (no ORM unit of work): every write
    # transaction that changes a state ends here.
    connection.execute(_INSERT_EVENTS, rows)


_EVENTS = AuditEvent.__table__  # type: ignore[attr-defined]
_LAST_HASH = select(_EVENTS.c.hash).order_by(_EVENTS.c.id.desc()).limit(1)
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
    last_id = 0
    while True:
        query = select_models(AuditEvent).where(col(AuditEvent.id) > last_id)
        if since is not None:
            query = query.where(col(AuditEvent.created_at) >= since)
        rows = session.exec(query.order_by(col(AuditEvent.id)).limit(batch)).all()
        if not rows:
            return
        yield from rows
        last_id = rows[-1].id or last_id


def verify_chain(session: Session) -> tuple[int, ChainBreak | None]:
    """Walk the chain from the start; return how many events were checked and the first break."""
    expected_prev = GENESIS_HASH
    count = 0
    for audit_event in iter_events(session):
        assert audit_event.id is not None
        count += 1
        if audit_event.prev_hash != expected_prev:
            return count, ChainBreak(
                audit_event.id,
                "prev_hash does not match the preceding event's hash: "
                "an event was edited, inserted or deleted just before it",
            )
        if event_hash(audit_event) != audit_event.hash:
            return count, ChainBreak(audit_event.id, "content does not match its hash: the event was edited")
        expected_prev = audit_event.hash
    return count, None
