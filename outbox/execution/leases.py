"""The actions table as a leased job (outbox/jobs/): queued rows are claimed into running with a
lease held by one worker; the sweeper re-drives running rows whose lease expired."""

from __future__ import annotations

from outbox.actions.models import Action
from outbox.config import Settings
from outbox.jobs.backoff import RetryPolicy
from outbox.jobs.repository import JobTable

ACTION_JOBS = JobTable.of(
    Action.__table__,  # type: ignore[attr-defined]
    status="status",
    lease_until="lease_expires_at",
    lease_owner="lease_owner",
)


def action_retries(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.max_attempts,
        base_seconds=settings.retry_base_seconds,
        cap_seconds=settings.retry_max_seconds,
    )
