"""The SQL of leased jobs: claim, settle, and re-drive after a lease expired.

Every statement is one conditional UPDATE. Its WHERE clause says which state the row must still
be in, so when several workers (or a worker and the sweeper) race for one row, the database lets
exactly one of them change it and the others learn they lost: no read-then-write window, on
SQLite (whose writers take the database lock, see outbox/db.py) or PostgreSQL (row locks).

A claim adds one to `attempts` and sets the lease; later statements about that claim require the
same attempt number (and the same owner, where the table records one). A worker whose lease
expired and whose job was re-driven therefore cannot overwrite the next attempt's outcome: each
attempt is settled at most once.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, or_, select, update
from sqlmodel import Session


@dataclass(frozen=True, slots=True)
class JobTable:
    """Which columns of a table hold the bookkeeping of a leased job.

    `lease_owner` is optional: the actions table records which worker holds the lease (it is
    audited); the deliveries table does not, and the attempt number alone identifies a claim.
    """

    table: Table
    id: Any
    status: Any
    attempts: Any
    not_before: Any
    lease_until: Any
    updated_at: Any
    lease_owner: Any = None

    @classmethod
    def of(
        cls,
        table: Table,
        *,
        status: str,
        lease_until: str,
        lease_owner: str | None = None,
        not_before: str = "not_before",
    ) -> JobTable:
        c = table.c
        return cls(
            table=table,
            id=c.id,
            status=c[status],
            attempts=c.attempts,
            not_before=c[not_before],
            lease_until=c[lease_until],
            updated_at=c.updated_at,
            lease_owner=c[lease_owner] if lease_owner is not None else None,
        )


@dataclass(frozen=True, slots=True)
class Claim:
    """What a worker won: attempt number `attempt` of job `job_id`, leased until `lease_until`."""

    job_id: str
    attempt: int
    owner: str | None
    lease_until: datetime


@dataclass(frozen=True, slots=True)
class ExpiredLease:
    """A claim whose worker stopped answering (crashed, killed, partitioned)."""

    job_id: str
    attempt: int
    owner: str | None


def claim(
    session: Session,
    jobs: JobTable,
    job_id: str,
    *,
    claimable: Collection[str],
    now: datetime,
    lease: timedelta,
    running: str | None = None,
    owner: str | None = None,
    below_attempts: int | None = None,
    values: Mapping[str, Any] | None = None,
) -> Claim | None:
    """Take the lease on `job_id` if it is in one of the `claimable` states, due, and not leased
    by anyone (or leased by someone whose lease expired). Returns the claim, or None if this
    worker lost the race or the job is not ready.

    `running` is the state a claimed job moves to (None: it keeps its state, and the lease alone
    marks it taken). With `below_attempts`, a job that used that many attempts is not claimed
    again (the sweeper dead-letters it).
    """
    lease_until = now + lease
    condition = and_(
        jobs.id == job_id,
        jobs.status.in_(list(claimable)),
        or_(jobs.not_before.is_(None), jobs.not_before <= now),
        or_(jobs.lease_until.is_(None), jobs.lease_until < now),
    )
    if below_attempts is not None:
        condition = and_(condition, jobs.attempts < below_attempts)
    changes: dict[Any, Any] = {
        jobs.attempts: jobs.attempts + 1,
        jobs.lease_until: lease_until,
        jobs.updated_at: now,
    }
    if running is not None:
        changes[jobs.status] = running
    if jobs.lease_owner is not None:
        changes[jobs.lease_owner] = owner
    for name, value in (values or {}).items():
        changes[jobs.table.c[name]] = value
    won = session.execute(update(jobs.table).where(condition).values(changes).returning(jobs.attempts)).first()
    if won is None:
        return None
    return Claim(job_id=job_id, attempt=int(won[0]), owner=owner, lease_until=lease_until)


def held_by(jobs: JobTable, claim: Claim, *, held: str) -> ColumnElement[bool]:
    """The condition that `claim` is still the current attempt of its job."""
    condition = and_(jobs.id == claim.job_id, jobs.status == held, jobs.attempts == claim.attempt)
    if jobs.lease_owner is not None:
        condition = and_(condition, jobs.lease_owner == claim.owner)
    return condition


def settle(
    session: Session,
    jobs: JobTable,
    claim: Claim,
    *,
    held: str,
    now: datetime,
    values: Mapping[str, Any],
    where: ColumnElement[bool] | None = None,
) -> bool:
    """Record the outcome of `claim` and release its lease, if it is still the current attempt
    (and `where` holds). Returns False when the lease expired and the job was re-driven meanwhile."""
    condition = held_by(jobs, claim, held=held)
    if where is not None:
        condition = and_(condition, where)
    return _update(session, jobs, condition, now=now, values=values)


def expired_leases(session: Session, jobs: JobTable, *, held: str, now: datetime, limit: int) -> list[ExpiredLease]:
    """Jobs in state `held` whose lease ran out before `now`, oldest lease first."""
    owner = jobs.lease_owner if jobs.lease_owner is not None else jobs.id
    rows = session.execute(
        select(jobs.id, jobs.attempts, owner)
        .where((jobs.status == held) & (jobs.lease_until < now))
        .order_by(jobs.lease_until)
        .limit(limit)
    ).all()
    return [
        ExpiredLease(job_id=row[0], attempt=int(row[1]), owner=row[2] if jobs.lease_owner is not None else None)
        for row in rows
    ]


def redrive(
    session: Session,
    jobs: JobTable,
    expired: ExpiredLease,
    *,
    held: str,
    now: datetime,
    values: Mapping[str, Any],
) -> bool:
    """Release an expired lease (and apply `values`: back to claimable, or dead-lettered) if the
    job is still in that attempt and its lease still expired. Returns whether this caller did it."""
    condition = and_(
        jobs.id == expired.job_id,
        jobs.status == held,
        jobs.attempts == expired.attempt,
        jobs.lease_until < now,
    )
    return _update(session, jobs, condition, now=now, values=values)


def redrive_expired(
    session: Session,
    jobs: JobTable,
    *,
    held: str,
    now: datetime,
    exhausted: Callable[[int], bool],
    values_for: Callable[[ExpiredLease, bool], Mapping[str, Any]],
    limit: int,
) -> list[tuple[ExpiredLease, bool]]:
    """The sweeper's half: every job whose lease expired goes back to be claimed again, or, when
    `exhausted(attempts)`, to its dead-letter state. `values_for(lease, dead)` gives the columns
    to set. Returns the leases this caller re-drove, each with whether it was dead-lettered."""
    moved: list[tuple[ExpiredLease, bool]] = []
    for expired in expired_leases(session, jobs, held=held, now=now, limit=limit):
        dead = exhausted(expired.attempt)
        if redrive(session, jobs, expired, held=held, now=now, values=values_for(expired, dead)):
            moved.append((expired, dead))
    return moved


def _update(
    session: Session, jobs: JobTable, condition: ColumnElement[bool], *, now: datetime, values: Mapping[str, Any]
) -> bool:
    changes: dict[Any, Any] = {jobs.lease_until: None, jobs.updated_at: now}
    if jobs.lease_owner is not None:
        changes[jobs.lease_owner] = None
    for name, value in values.items():
        changes[jobs.table.c[name]] = value
    result = session.execute(update(jobs.table).where(condition).values(changes).returning(jobs.id))
    return result.first() is not None
