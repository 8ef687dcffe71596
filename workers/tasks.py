"""Celery task entry points. Thin: they build the process's runtime once and call services."""

from __future__ import annotations

from functools import cache

from celery.signals import worker_process_init

from outbox.config import get_settings
from outbox.execution.service import run_action
from outbox.execution.sweeper import sweep_once
from outbox.logs import configure_logging
from outbox.runtime import Runtime
from workers.celery_app import EXECUTE_TASK, SWEEP_TASK, CeleryDispatcher, app


@cache
def runtime() -> Runtime:
    settings = get_settings()
    configure_logging(settings)
    built = Runtime.build(settings, CeleryDispatcher(app))
    if settings.policy_watch:
        import threading

        built.policy.watch(threading.Event())
    return built


@worker_process_init.connect
def _fresh_runtime_per_child(**_: object) -> None:
    # Forked children must not share the parent's database connections.
    runtime.cache_clear()


@app.task(name=EXECUTE_TASK, acks_late=True)
def execute_action(action_id: str) -> str | None:
    return run_action(runtime(), action_id)


@app.task(name=SWEEP_TASK)
def sweep() -> dict[str, int]:
    report = sweep_once(runtime())
    return {"republished": len(report.republished), "resumed": report.resumed, "lease_expired": report.lease_expired}
