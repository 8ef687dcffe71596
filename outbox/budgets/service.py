"""The one module that owns budgets and rate limits.

Two primitives, both exact across any number of workers because the database arbitrates:

- `reserve`: charge N units against several fixed-window caps at once, all or nothing. Each
  charge is a conditional `UPDATE … SET used = used + n WHERE used + n <= cap`; PostgreSQL
  re-checks the condition on the locked row, SQLite runs writers one at a time. Keys are charged
  in sorted order so that two reservations can never deadlock.
- `acquire_slot`/`release_slot`: at most N holders of a key at once, with an expiry so that a
  crashed holder frees its slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, or_, update
from sqlmodel import Session, col

from outbox.budgets.models import BudgetCounter, ConcurrencySlot
from outbox.db import insert_or_ignore
from outbox.sqltypes import utcnow


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
    savepoint = session.begin_nested()
    for cap in ordered:
        result = session.execute(
            update(BudgetCounter)
            .where(
                and_(
                    col(BudgetCounter.key) == cap.key,
                    col(BudgetCounter.window_start) == cap.window_start,
                    col(BudgetCounter.used) + amount * cap.units <= cap.limit,
                )
            )
            .values(used=col(BudgetCounter.used) + amount * cap.units)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            savepoint.rollback()
            return Reservation(False, cap)
    savepoint.commit()
    return Reservation(True)


def used(session: Session, key: str, window: timedelta, now: datetime | None = None) -> int:
    row = session.get(BudgetCounter, (key, window_start(now or utcnow(), window)))
    return row.used if row else 0


def acquire_slot(session: Session, key: str, limit: int, holder: str, ttl: timedelta) -> bool:
    """Take one of `limit` slots for `key`, or return False when all are held."""
    now = utcnow()
    insert_or_ignore(session, ConcurrencySlot, [{"key": key, "slot": n} for n in range(limit)])
    for slot in range(limit):
        result = session.execute(
            update(ConcurrencySlot)
            .where(
                and_(
                    col(ConcurrencySlot.key) == key,
                    col(ConcurrencySlot.slot) == slot,
                    or_(
                        col(ConcurrencySlot.holder).is_(None),
                        col(ConcurrencySlot.expires_at) < now,
                        col(ConcurrencySlot.holder) == holder,
                    ),
                )
            )
            .values(holder=holder, expires_at=now + ttl)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            return True
    return False


def release_slot(session: Session, key: str, holder: str) -> None:
    session.execute(
        update(ConcurrencySlot)
        .where(and_(col(ConcurrencySlot.key) == key, col(ConcurrencySlot.holder) == holder))
        .values(holder=None, expires_at=None)
    )
