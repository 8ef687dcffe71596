"""The Celery app for production: workers execute actions, beat runs the sweeper.

Settings follow the transactional-outbox design: messages only carry an action id and are
published after the action's transaction commits; `acks_late` with prefetch 1 means a message is
acknowledged only after its action ran, and a lost or duplicated message is harmless because the
database decides who runs what.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from celery import Celery

from outbox.config import get_settings

EXECUTE_TASK = "outbox.execute_action"
SWEEP_TASK = "outbox.sweep"
CHECKPOINT_TASK = "outbox.audit_checkpoint"


def make_celery(broker_url: str | None = None) -> Celery:
    settings = get_settings()
    app = Celery("outbox", broker=broker_url or settings.broker_url or "memory://")
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600},
        task_default_queue="outbox",
        beat_schedule={
            "sweep": {
                "task": SWEEP_TASK,
                "schedule": timedelta(seconds=settings.sweep_interval_seconds),
                "options": {"expires": settings.sweep_interval_seconds * 5},
            },
            # Signed audit checkpoints (docs/audit.md); a tick that finds the head unmoved writes nothing.
            "audit-checkpoint": {
                "task": CHECKPOINT_TASK,
                "schedule": timedelta(seconds=settings.audit_checkpoint_interval_seconds),
                "options": {"expires": settings.audit_checkpoint_interval_seconds * 5},
            },
        },
        include=["workers.tasks"],
    )
    return app


app = make_celery()


class CeleryDispatcher:
    """Publishes wake-ups to the broker. Failures are logged, never raised: the action is
    already committed and the sweeper will publish it again."""

    reaches_workers = True

    def __init__(self, celery: Celery) -> None:
        self.celery = celery

    def publish(self, action_ids: list[str], *, backpressure: bool = False) -> None:
        # No backpressure here: the broker is the buffer, and workers scale out (docs/operations.md).
        for action_id in action_ids:
            try:
                self.celery.send_task(EXECUTE_TASK, args=[action_id], retry=False)
            except Exception as exc:  # broker down: the sweeper re-publishes
                structlog.get_logger(__name__).warning("publish.failed", action_id=action_id, error=str(exc))

    def healthy(self) -> bool:
        try:
            with self.celery.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
            return True
        except Exception:
            return False
