"""The one module that owns budgets and rate limits.

Two primitives, both exact across any number of workers because the database arbitrates:

- `reserve`: charge N units against several fixed-window caps at once, all or nothing. Each
  charge is a conditional `UPDATE … SET used = used + n WHERE used + n <= cap`; PostgreSQL
  re-checks the condition on the locked row, SQLite runs writers one at a time. Keys are charged
  in sorted order so that two reservations can never deadlock.
- `acquire_slot`/`release_slot`: at most N holders of a key at once. A slot is a lease, one row
  per running holder, with an expiry so that a crashed holder frees its slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, or_, select, update
from sqlmodel import Session, col

from outbox.budgets.models import BudgetCounter, ConcurrencySlot
from outbox.db import insert_or_ignore
from outbox.sqltypes import utcnow

# The first half of the two-part PostgreSQL advisory lock key that serialises the slot leases
# of one key (the second half is the key's hash). The two-part keys are apart from the
# one-part keys of the audit chain and of migrations; another slot key with the same hash
# only waits a moment longer.
_SLOT_LOCK_CLASS = 0x0510_7500


@dataclass(frozen=True, slots=True)
class Cap:
    """`limit` units per window of `window` starting at `window_start`."""

    key: str
    limit: int
    window: timedelta
    now: datetime
    # Units one reservation charges this cap, times `reserve`'s amount: a message to three
    # recipients at one domain owes that domain's cap three units and the sender's cap one.
    units: int = 1

    @property
    def window_start(self) -> datetime:
        return window_start(self.now, self.window)

    @property
    def window_end(self) -> datetime:
        return self.window_start + self.window


@dataclass(frozen=True, slots=True)
class Reservation:
    granted: bool
    # When refused: the cap that refused and when its window reopens.
    refused_by: Cap | None = None

    @property
    def retry_at(self) -> datetime | None:
        return self.refused_by.window_end if self.refused_by else None


def window_start(now: datetime, window: timedelta) -> datetime:
    """Fixed windows aligned on the Unix epoch (hours on the hour, days at 00:00 UTC)."""
    seconds = int(window.total_seconds())
    epoch = int(now.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC)


def reserve(session: Session, caps: Sequence[Cap], amount: int = 1) -> Reservation:
    """Charge `amount` against every cap, or against none.

    Runs inside the caller's transaction, in a savepoint: on refusal the charges already made
    for other caps are undone and the caller's transaction carries on.
    """
    ordered = sorted(caps, key=lambda c: (c.key, c.window_start))
    for cap in ordered:
        if cap.limit < amount * cap.units:
            return Reservation(False, cap)
    if not ordered:
        return Reservation(True)
    insert_or_ignore(
        session,
        BudgetCounter,
        [{"key": c.key, "window_start": c.window_start, "used": 0} for c in ordered],
    )
    if len(ordered) == 1:
        # One conditional update: it charges or changes nothing, no savepoint needed.
        return Reservation(True) if _charge(session, ordered[0], amount) else Reservation(False, ordered[0])
    savepoint = session.begin_nested()
    for cap in ordered:
        if not _charge(session, cap, amount):
            savepoint.rollback()
            return Reservation(False, cap)
    savepoint.commit()
    return Reservation(True)


def _charge(session: Session, cap: Cap, amount: int) -> bool:
    """Add `amount` units to the cap's counter if that keeps it within the limit."""
    result = session.connection().execute(
        _CHARGE,
        {"cap_key": cap.key, "cap_window": cap.window_start, "units": amount * cap.units, "cap_limit": cap.limit},
    )
    return bool(result.rowcount == 1)


def _charge_statement() -> Any:
    counter = BudgetCounter.__table__  # type: ignore[attr-defined]
    units: Any = bindparam("units")
    return (
        update(counter)
        .where(
            and_(
                # Named apart from the columns: an UPDATE reserves the column names for its SET.
                counter.c.key == bindparam("cap_key"),
                counter.c.window_start == bindparam("cap_window"),
                counter.c.used + units <= bindparam("cap_limit"),
            )
        )
        .values(used=counter.c.used + units)
    )


# Built once: every budgeted execution (each HTTP request, each mail) runs it.
_CHARGE = _charge_statement()


def used(session: Session, key: str, window: timedelta, now: datetime | None = None) -> int:
    row = session.get(BudgetCounter, (key, window_start(now or utcnow(), window)))
    return row.used if row else 0


def acquire_slot(session: Session, key: str, limit: int, holder: str, ttl: timedelta) -> bool:
    """Lease one of `limit` slots of `key` to `holder` for `ttl`, or return False when `limit`
    unexpired leases are held. A holder that already has a lease renews it.

    One row per running holder, so the cost follows the holders, not the limit. A new lease takes
    the lowest free slot number below `limit`, and (key, slot) is the primary key: however the
    transactions interleave, no more than `limit` new leases can exist. The leases of one key are
    also decided one transaction at a time (the caller's `BEGIN IMMEDIATE` on SQLite, a per-key
    advisory lock on PostgreSQL), so count-then-insert is exact: a racer waits for the undecided
    lease instead of picking the same free number and being refused while another is free.
    Expired leases (a crashed holder) are deleted on the way, as are the free rows that earlier
    versions pre-inserted (`holder` NULL); a held row of theirs counts as a lease, so versions
    running side by side during an upgrade keep one limit.
    """
    now = utcnow()
    _serialise_slots(session, key)
    rows = session.execute(
        select(col(ConcurrencySlot.slot), col(ConcurrencySlot.holder), col(ConcurrencySlot.expires_at)).where(
            col(ConcurrencySlot.key) == key
        )
    ).all()
    held = [row for row in rows if _is_live(row.holder, row.expires_at, now)]
    if len(held) < len(rows):
        session.execute(
            delete(ConcurrencySlot).where(
                col(ConcurrencySlot.key) == key,
                or_(
                    col(ConcurrencySlot.holder).is_(None),
                    col(ConcurrencySlot.expires_at).is_(None),
                    col(ConcurrencySlot.expires_at) < now,
                ),
            )
        )
    if any(row.holder == holder for row in held):
        session.execute(
            update(ConcurrencySlot)
            .where(col(ConcurrencySlot.key) == key, col(ConcurrencySlot.holder) == holder)
            .values(expires_at=now + ttl)
        )
        return True
    if len(held) >= limit:
        return False
    taken = {row.slot for row in held}
    # A free number below `limit` exists: fewer than `limit` leases are held.
    slot = next(n for n in range(limit) if n not in taken)
    lease = {"key": key, "slot": slot, "holder": holder, "expires_at": now + ttl}
    return insert_or_ignore(session, ConcurrencySlot, [lease]) == 1


def release_slot(session: Session, key: str, holder: str) -> None:
    """End `holder`'s lease on a slot of `key` (nothing happens if it holds none)."""
    session.execute(
        delete(ConcurrencySlot).where(col(ConcurrencySlot.key) == key, col(ConcurrencySlot.holder) == holder)
    )


def _is_live(holder: str | None, expires_at: datetime | None, now: datetime) -> bool:
    return holder is not None and expires_at is not None and expires_at >= now


def _serialise_slots(session: Session, key: str) -> None:
    """On PostgreSQL, wait for the other transactions deciding leases of `key` (only those: a
    lock per key, held to the end of the transaction). SQLite's writers already run one at a
    time."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(_SLOT_LOCK_CLASS, func.hashtext(key))))
