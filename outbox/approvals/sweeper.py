"""The approvals part of the periodic sweep: expiry, reconciliation, deliveries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from outbox.actions.callbacks import enqueue_due_callbacks
from outbox.approvals.service import expire_due
from outbox.deliveries import service as delivery

if TYPE_CHECKING:
    from outbox.runtime import Runtime

# Where the sweep makes the deliveries itself (`Runtime.sweep_delivers`, the embedded server), a
# peer that times out must not hold up the sweep (re-publishing, expiry) for longer than this.
SWEEP_DELIVERY_BUDGET_SECONDS = 5.0


def sweep_approvals(runtime: Runtime) -> int:
    """Expire overdue requests (fail closed), queue callbacks and notifier updates for actions whose
    state changed, re-drive deliveries whose worker stopped answering (dead-lettered after their
    last attempt), and, where the runtime says so (embedded), make the due deliveries. Returns how many expired.

    With a broker, the due deliveries are made by the `outbox.deliver_notifications` Celery task
    that follows each sweep, so a slow Slack never delays the sweep itself.
    """
    expired = expire_due(runtime)
    with runtime.db.session() as session:
        enqueue_due_callbacks(session)
        runtime.approval_notifier.sweep(session)
    delivery.redrive_expired(runtime)
    if runtime.sweep_delivers:
        delivery.deliver_due(runtime, budget_seconds=SWEEP_DELIVERY_BUDGET_SECONDS)
    return expired
