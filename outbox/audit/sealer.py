"""The sealer: chains the audit events that requests inserted unsealed, in batches, off the hot path.

A request's transaction only inserts its events (`record_event`), with `seq`, `prev_hash` and
`hash` NULL: no lock and no read of the chain's tail, so concurrent commits never wait for one
another. The sealer runs in the checkpointer's tick (about twice a second, docs/audit.md) and in
`outbox audit verify` and `export`. One seal is one write transaction, serialised with every
other sealer (a transaction-scoped advisory lock on PostgreSQL, taken by sealers only, never by
requests; the write transaction itself on SQLite). Inside it the sealer reads the tail (the
highest `seq` and its hash), reads the committed unsealed events by id (up to a batch), gives
them the next positions in that order with their `prev_hash` and `hash`, and commits.

Chain order is `seq` order, not `id` order. On PostgreSQL an id is drawn when the row is
inserted, but the row becomes visible when its transaction commits: a transaction that inserted
id 7 and commits after a seal of ids 8 and 9 is sealed by the next seal, at the position after
9. Its event is not lost and not put "back" before events already chained (that would rewrite
sealed hashes); it simply takes the next position. `created_at` was fixed at insert and is part
of the hash, so the chain records both when each event happened and the order it was sealed in.
"""

from __future__ import annotations

from sqlalchemy import bindparam, func, select, update

from outbox.audit.models import AuditEvent
from outbox.audit.service import GENESIS_HASH, link_hash
from outbox.db import Database

# The most events one seal chains: one transaction stays short (SQLite's write lock, the
# PostgreSQL chain lock) however large a backlog is; `seal_all` continues with the next batch.
SEAL_BATCH = 1000
# Arbitrary constant naming the PostgreSQL advisory lock that serialises sealers.
_CHAIN_LOCK_ID = 0x0A0D17

# Statements built once.
_EVENTS = AuditEvent.__table__  # type: ignore[attr-defined]
_LOCK = select(func.pg_advisory_xact_lock(_CHAIN_LOCK_ID))
_ANY_UNSEALED = select(_EVENTS.c.id).where(_EVENTS.c.seq.is_(None)).limit(1)
_TAIL = select(_EVENTS.c.seq, _EVENTS.c.hash).where(_EVENTS.c.seq.is_not(None)).order_by(_EVENTS.c.seq.desc()).limit(1)
_UNSEALED = (
    select(
        _EVENTS.c.id,
        _EVENTS.c.action_id,
        _EVENTS.c.event_type,
        _EVENTS.c.actor,
        _EVENTS.c.from_status,
        _EVENTS.c.to_status,
        _EVENTS.c.data_json,
        _EVENTS.c.created_at,
    )
    .where(_EVENTS.c.seq.is_(None))
    .order_by(_EVENTS.c.id)
    .limit(bindparam("batch"))
)
_SEAL = (
    update(_EVENTS)
    .where(_EVENTS.c.id == bindparam("event_id"))
    .values(seq=bindparam("position"), prev_hash=bindparam("link"), hash=bindparam("digest"))
)


def has_unsealed(db: Database) -> bool:
    """A cheap read (no write lock): is any committed event waiting to be sealed?"""
    with db.single_reads() as connection:
        return connection.execute(_ANY_UNSEALED).first() is not None


def seal_pending(db: Database, *, limit: int = SEAL_BATCH) -> int:
    """Chain up to `limit` committed unsealed events, oldest id first, in one write transaction;
    return how many. A call that finds nothing to seal takes no write lock."""
    if not has_unsealed(db):
        return 0
    with db.session() as session:
        connection = session.connection()
        if db.is_postgres:
            # Held until this transaction commits: the next sealer reads the tail this one wrote.
            connection.execute(_LOCK)
        rows = connection.execute(_UNSEALED, {"batch": limit}).all()
        if not rows:
            return 0  # another sealer took them
        tail = connection.execute(_TAIL).first()
        position, link = (int(tail.seq), str(tail.hash)) if tail is not None else (0, GENESIS_HASH)
        links = []
        for row in rows:
            position += 1
            digest = link_hash(
                link,
                action_id=row.action_id,
                event_type=row.event_type,
                actor=row.actor,
                from_status=row.from_status,
                to_status=row.to_status,
                data_json=row.data_json,
                created_at=row.created_at,
            )
            links.append({"event_id": row.id, "position": position, "link": link, "digest": digest})
            link = digest
        connection.execute(_SEAL, links)
    return len(rows)


def seal_all(db: Database, *, batch: int = SEAL_BATCH) -> int:
    """Seal everything committed so far, a batch per transaction; return how many were sealed."""
    total = 0
    while (sealed := seal_pending(db, limit=batch)) > 0:
        total += sealed
        if sealed < batch:
            break
    return total
