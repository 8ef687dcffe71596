"""The approvals part of the periodic sweep: expiry, reconciliation, deliveries."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete
from sqlmodel import col

from outbox.approvals.service import expire_due
from outbox.deliveries import service as delivery
from outbox.deliveries.callbacks import enqueue_due_callbacks
from outbox.runtime import Runtime
from outbox.slack.client import slack_enabled
from outbox.slack.models import SlackSeenRequest
from outbox.slack.sync import reconcile_messages
from outbox.sqltypes import utcnow

# Slack signatures older than five minutes are refused anyway; remembering them longer is useless.
SEEN_REQUEST_TTL = timedelta(minutes=10)
# In the embedded mode the sweeper makes the deliveries itself; a peer that times out must not
# hold up the sweep (re-publishing, expiry) for longer than this.
SWEEP_DELIVERY_BUDGET_SECONDS = 5.0


def sweep_approvals(runtime: Runtime) -> int:
    """Expire overdue requests (fail closed), queue callbacks and Slack updates for actions whose
    state changed, re-drive deliveries whose worker stopped answering (dead-lettered after their
    last attempt), and, in the embedded mode, make the due deliveries. Returns how many expired.

    With a broker, the due deliveries are made by the `outbox.deliver_notifications` Celery task
    that follows each sweep, so a slow Slack never delays the sweep itself.
    """
    expired = expire_due(runtime)
    with runtime.db.session() as session:
        enqueue_due_callbacks(session)
        if slack_enabled(runtime.settings):
            reconcile_messages(session)
        session.execute(delete(SlackSeenRequest).where(col(SlackSeenRequest.seen_at) < utcnow() - SEEN_REQUEST_TTL))
    delivery.redrive_expired(runtime)
    if runtime.settings.is_embedded:
        delivery.deliver_due(runtime, budget_seconds=SWEEP_DELIVERY_BUDGET_SECONDS)
    return expired
