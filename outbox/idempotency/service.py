"""Idempotency keys (draft-ietf-httpapi-idempotency-key-header), scoped per agent.

A request first looks its key up without any write lock: a key already answered is answered
again from a read (a replay never writes). The lookup may read, in the same statement, the
current columns of the row the key recorded (`CurrentRow`): the actions service answers a
replay with the action as it is now, not as it was when the key was first answered.

A new key is stored, completed with its exact answer, in the one transaction that records the
action; if a concurrent request with the same key committed first, the insert finds its row,
this request's transaction rolls back, and it answers with the winner's answer. So a call is
recorded once, and there is no half-processed state a crash could leave behind. Records live at
least `idempotency_ttl_hours` (24 h by default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Row, Select, Table, bindparam, delete, select
from sqlmodel import Session, col

from outbox.canonical import digest
from outbox.db import Database, insert_or_ignore
from outbox.errors import IdempotencyKeyInProgress, IdempotencyKeyInvalid, IdempotencyKeyMissing, IdempotencyKeyReused
from outbox.idempotency.models import IdempotencyRecord
from outbox.sqltypes import utcnow

# Earlier versions committed a `processing` record before doing the work. One older than this
# belongs to a request that died mid-way; a retry with the same key and body takes it over.
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
class Replay:
    """The answer stored for a key, with the id of what it recorded (if anything) and, when the
    lookup asked for it (`CurrentRow`), that row's columns as they are now (None if it is gone)."""

    status: int
    body: dict[str, Any]
    action_id: str | None = None
    current: Mapping[str, Any] | None = None


class CurrentRow:
    """A lookup that also reads the row a key recorded (joined on its `id` = the record's
    `action_id`), in the same statement: one read, no write lock, and the stored answer and the
    row agree with each other. The owner of that table builds one, once (idempotency knows no
    domain's tables)."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        if "id" not in columns:
            raise ValueError("the columns must include `id`: it tells a recorded row from none")
        self.columns = tuple(columns)
        self.statement = _select_record(table, self.columns)


def lookup(db: Database, agent_id: str, key: str, fp: str, current: CurrentRow | None = None) -> Replay | None:
    """The stored answer for this agent's key, read without any write lock; None while the key
    is free (never used, expired, or left `processing` by an earlier version of the outbox).

    Raises `IdempotencyKeyReused` when the key was used for another request."""
    statement = _SELECT_RECORD if current is None else current.statement
    with db.single_reads() as connection:
        row = connection.execute(statement, {"agent_id": agent_id, "key": key}).first()
    if row is None or row.expires_at <= utcnow():
        return None
    return _stored_answer(row, fp, current)


def record_answer(
    session: Session,
    *,
    agent_id: str,
    key: str,
    fp: str,
    ttl: timedelta,
    status: int,
    body: dict[str, Any],
    action_id: str | None,
) -> Replay | None:
    """Store the answer for a key in the caller's transaction, the one that records the action.

    Returns None when stored. When a concurrent request with the same key committed first,
    returns its answer instead: the caller rolls back and sends that answer, so the call is
    recorded once whichever request wins. Raises `IdempotencyKeyReused` if that request was
    another call."""
    now = utcnow()
    values = {
        "agent_id": agent_id,
        "key": key,
        "fingerprint": fp,
        "state": COMPLETED,
        "response_status": status,
        "response_body": body,
        "action_id": action_id,
        "created_at": now,
        "expires_at": now + ttl,
    }
    if insert_or_ignore(session, IdempotencyRecord, [values]):
        return None
    params = {"agent_id": agent_id, "key": key}
    row = session.execute(_SELECT_RECORD.with_for_update(), params).first()
    if row is None:
        # PostgreSQL: a concurrent request replaced an expired row while this one waited for its
        # lock; the replacement is committed, and the next statement sees it.
        row = session.execute(_SELECT_RECORD, params).one()
    if row.expires_at <= now or (row.state == PROCESSING and row.created_at < now - ABANDONED_AFTER):
        # Expired, or abandoned mid-way by a request of an earlier version: the key is free.
        session.execute(delete(IdempotencyRecord).where(col(IdempotencyRecord.id) == row.id))
        insert_or_ignore(session, IdempotencyRecord, [values])
        return None
    if row.state == PROCESSING and row.fingerprint == fp:
        raise IdempotencyKeyInProgress
    return _stored_answer(row, fp)


_RECORD_COLUMNS = (
    "id",
    "fingerprint",
    "state",
    "response_status",
    "response_body",
    "action_id",
    "created_at",
    "expires_at",
)


def _select_record(recorded: Table | None = None, columns: Sequence[str] = ()) -> Select[Any]:
    """The key's record; with `recorded`, followed by `columns` of the row it recorded (NULLs
    when there is none)."""
    record = IdempotencyRecord.__table__  # type: ignore[attr-defined]
    chosen = [record.c[name] for name in _RECORD_COLUMNS]
    source = record
    if recorded is not None:
        chosen += [recorded.c[name] for name in columns]
        source = record.outerjoin(recorded, recorded.c.id == record.c.action_id)
    return (
        select(*chosen)
        .select_from(source)
        .where((record.c.agent_id == bindparam("agent_id")) & (record.c.key == bindparam("key")))
    )


# Built once: every submission runs it.
_SELECT_RECORD = _select_record()


def _stored_answer(row: Row[Any], fp: str, current: CurrentRow | None = None) -> Replay | None:
    if row.fingerprint != fp:
        raise IdempotencyKeyReused(row.action_id)
    if row.state != COMPLETED:
        return None
    now: dict[str, Any] | None = None
    if current is not None:
        values = dict(zip(current.columns, row[len(_RECORD_COLUMNS) :], strict=True))
        # An outer join without a match (no row recorded, or it is gone) gives NULL ids.
        now = values if values.get("id") is not None else None
    return Replay(row.response_status, row.response_body, row.action_id, now)


def purge_expired(session: Session) -> int:
    result = session.execute(delete(IdempotencyRecord).where(col(IdempotencyRecord.expires_at) < utcnow()))
    return int(result.rowcount)  # type: ignore[attr-defined]
