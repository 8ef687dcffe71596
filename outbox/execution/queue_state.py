"""The action queue as `/metrics` and `outbox status` see it, read from the database.

Here rather than in `outbox.metrics`: this is SQL on the actions table, which belongs to the
domain that runs the queue; metrics only turns the reading into Prometheus families. The edges
(`outbox/api/metrics.py`, `outbox status`) hand this reader to `render_metrics`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func
from sqlmodel import col, select

from outbox.actions.models import Action, ActionStatus
from outbox.metrics import QueueState
from outbox.sqltypes import utcnow

if TYPE_CHECKING:
    from outbox.db import Database


def read_queue_state(db: Database, now: datetime | None = None) -> QueueState:
    """A handful of queries on the `(status, not_before)` index; cheap enough for every scrape."""
    now = now or utcnow()
    queued = col(Action.status) == ActionStatus.QUEUED.value
    with db.session() as session:
        counts = {status.value: 0 for status in ActionStatus}
        for status, count in session.execute(select(Action.status, func.count()).group_by(col(Action.status))).all():
            counts[str(status)] = int(count)
        # Became due when queued (updated_at) or, for retries and delays, at not_before.
        fresh_count, fresh_oldest = session.execute(
            select(func.count(), func.min(col(Action.updated_at))).where(queued & col(Action.not_before).is_(None))
        ).one()
        delayed_count, delayed_oldest = session.execute(
            select(func.count(), func.min(col(Action.not_before))).where(queued & (col(Action.not_before) <= now))
        ).one()
        expired = session.execute(
            select(func.count()).where(
                (col(Action.status) == ActionStatus.RUNNING.value) & (col(Action.lease_expires_at) < now)
            )
        ).scalar_one()
        approval_oldest = session.execute(
            select(func.min(col(Action.updated_at))).where(col(Action.status) == ActionStatus.AWAITING_APPROVAL.value)
        ).scalar_one()
        owners = (
            session.execute(
                select(col(Action.lease_owner))
                .where((col(Action.status) == ActionStatus.RUNNING.value) & col(Action.lease_owner).is_not(None))
                .distinct()
            )
            .scalars()
            .all()
        )
    oldest = [t for t in (fresh_oldest, delayed_oldest) if t is not None]
    return QueueState(
        measured_at=now,
        by_status=counts,
        due=int(fresh_count) + int(delayed_count),
        oldest_due_since=min(oldest) if oldest else None,
        leases_expired=int(expired),
        awaiting_approval=counts[ActionStatus.AWAITING_APPROVAL.value],
        oldest_approval_since=approval_oldest,
        running_owners=sorted(str(o) for o in owners),
    )
