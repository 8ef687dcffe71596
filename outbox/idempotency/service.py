"""Idempotency keys (draft-ietf-httpapi-idempotency-key-header), scoped per agent.

The first request with a key commits a `processing` record in its own short transaction before
doing any work, so that concurrent requests with the same key find it and answer 409 instead of
creating a second action. The record is completed, with the exact answer, in the same
transaction that records the action; later requests with the same key and fingerprint get that
answer again. Records live at least `idempotency_ttl_hours` (24 h by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from outbox.canonical import digest
from outbox.db import Database
from outbox.errors import IdempotencyKeyInProgress, IdempotencyKeyInvalid, IdempotencyKeyMissing, IdempotencyKeyReused
from outbox.idempotency.models import IdempotencyRecord
from outbox.sqltypes import utcnow

# A `processing` record older than this belongs to a request that died mid-way; it may be taken
# over by a retry with the same key and body.
ABANDONED_AFTER = timedelta(seconds=120)
PROCESSING = "processing"
COMPLETED = "completed"


def validate_key(header: str | None) -> str:
    if header is None:
        raise IdempotencyKeyMissing
    key = header.strip('"')
    if not 1 <= len(key) <= 255 or not all(0x21 <= ord(ch) <= 0x7E for ch in key):
        raise IdempotencyKeyInvalid
    return key


def fingerprint(tool: str, args: dict[str, Any], on_behalf_of: str | None) -> str:
    return digest({"tool": tool, "args": args, "on_behalf_of": on_behalf_of})


@dataclass(frozen=True, slots=True)
class Claimed:
    """This request owns the key and must complete or release it."""

    record_id: int


@dataclass(frozen=True, slots=True)
class Replay:
    status: int
    body: dict[str, Any]


def claim_key(db: Database, agent_id: str, key: str, fp: str, ttl: timedelta) -> Claimed | Replay:
    for _ in range(3):
        try:
            with db.session() as session:
                return _claim(session, agent_id, key, fp, ttl)
        except IntegrityError:
            # Another request inserted the same key between our read and our insert.
            continue
    raise IdempotencyKeyInProgress


def _claim(session: Session, agent_id: str, key: str, fp: str, ttl: timedelta) -> Claimed | Replay:
    now = utcnow()
    record = session.exec(
        select(IdempotencyRecord).where(
            (col(IdempotencyRecord.agent_id) == agent_id) & (col(IdempotencyRecord.key) == key)
        )
    ).first()
    if record is not None and record.expires_at <= now:
        session.delete(record)
        session.flush()
        record = None
    if record is None:
        fresh = IdempotencyRecord(agent_id=agent_id, key=key, fingerprint=fp, state=PROCESSING, expires_at=now + ttl)
        session.add(fresh)
        session.flush()
        assert fresh.id is not None
        return Claimed(fresh.id)
    if record.fingerprint != fp:
        raise IdempotencyKeyReused(record.action_id)
    if record.state == COMPLETED:
        assert record.response_status is not None
        assert record.response_body is not None
        return Replay(record.response_status, record.response_body)
    if record.created_at < now - ABANDONED_AFTER:
        taken = session.execute(
            update(IdempotencyRecord)
            .where((col(IdempotencyRecord.id) == record.id) & (col(IdempotencyRecord.created_at) == record.created_at))
            .values(created_at=now)
        )
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            assert record.id is not None
            return Claimed(record.id)
    raise IdempotencyKeyInProgress


def complete(session: Session, claimed: Claimed, status: int, body: dict[str, Any], action_id: str | None) -> None:
    session.execute(
        update(IdempotencyRecord)
        .where(col(IdempotencyRecord.id) == claimed.record_id)
        .values(state=COMPLETED, response_status=status, response_body=body, action_id=action_id)
    )


def release(db: Database, claimed: Claimed) -> None:
    """Forget a key whose request recorded nothing (it was invalid), so it may be used again."""
    with db.session() as session:
        session.execute(
            delete(IdempotencyRecord).where(
                (col(IdempotencyRecord.id) == claimed.record_id) & (col(IdempotencyRecord.state) == PROCESSING)
            )
        )


def purge_expired(session: Session) -> int:
    result = session.execute(delete(IdempotencyRecord).where(col(IdempotencyRecord.expires_at) < utcnow()))
    return int(result.rowcount)  # type: ignore[attr-defined]
