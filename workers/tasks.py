"""Celery task entry points. Thin: they build the process's runtime once and call services."""

from __future__ import annotations

import os
import sys
import threading
from functools import cache

import structlog
from celery.signals import setup_logging, worker_init, worker_process_init, worker_process_shutdown

from outbox import metrics
from outbox.audit.checkpointer import Checkpointer
from outbox.config import get_settings
from outbox.deliveries.service import any_due, deliver_due
from outbox.execution.service import run_action
from outbox.execution.sweeper import sweep_once
from outbox.logs import configure_logging, log_context
from outbox.mail.service import dns_checks_due, run_due_dns_checks
from outbox.runtime import Runtime
from workers.celery_app import CHECKPOINT_TASK, EXECUTE_TASK, SWEEP_TASK, CeleryDispatcher, app


@cache
def runtime() -> Runtime:
    settings = get_settings()
    configure_logging(settings)
    built = Runtime.build(settings, CeleryDispatcher(app), decides_submissions=False)
    if settings.policy_watch:
        built.policy.watch(threading.Event())
    return built


@worker_process_init.connect
def _fresh_runtime_per_child(**_: object) -> None:
    # Forked children must not share the parent's database connections.
    runtime.cache_clear()
    checkpointer.cache_clear()


@setup_logging.connect
def _structured_logs(**_: object) -> None:
    # Connecting here stops Celery from installing its own text handlers: its lines, too,
    # go through outbox.logs (JSON, secrets redacted).
    configure_logging(get_settings())


@worker_init.connect
def _serve_worker_metrics(**_: object) -> None:
    # In the worker's main process, before the pool forks (see outbox.metrics).
    settings = metrics.MetricsSettings()
    if settings.worker_metrics_port is None:
        return
    try:
        metrics.start_worker_metrics_server(settings.worker_metrics_port, settings.worker_metrics_host)
    except (RuntimeError, OSError) as exc:
        # Celery logs and ignores exceptions from signal handlers; a worker asked to serve metrics
        # that cannot must not run unobserved (its liveness probe is that port).
        print(f"outbox worker: cannot serve metrics: {exc}", file=sys.stderr)
        raise SystemExit(78) from exc


@worker_process_shutdown.connect
def _forget_worker_process(**_: object) -> None:
    metrics.mark_worker_process_dead(os.getpid())


@app.task(name=EXECUTE_TASK, acks_late=True)
def execute_action(action_id: str) -> str | None:
    with log_context(action_id=action_id):
        return run_action(runtime(), action_id)


@app.task(name=SWEEP_TASK)
def sweep() -> dict[str, int]:
    report = sweep_once(runtime())
    # Slack messages and agent callbacks the sweep queued (or that wait for a retry) go out in
    # their own task, so a slow Slack never holds up the sweep.
    try:
        if any_due(runtime()):
            deliver_notifications.delay()
    except Exception as exc:  # broker down: the deliveries wait in the database for the next sweep
        structlog.get_logger(__name__).warning("deliveries.publish_failed", error=str(exc))
    # Mail subdomains' periodic DNS checks (docs/mail.md) run in their own task when one is due:
    # lookups can take seconds, and the verdict is stored for every process to read.
    try:
        if dns_checks_due(runtime()):
            check_mail_dns.delay()
    except Exception as exc:  # broker down: the next sweep asks again
        structlog.get_logger(__name__).warning("mail_dns.publish_failed", error=str(exc))
    return {"republished": len(report.republished), "resumed": report.resumed, "lease_expired": report.lease_expired}


@cache
def checkpointer() -> Checkpointer:
    return Checkpointer.from_settings(runtime().settings, runtime().db)


@app.task(name=CHECKPOINT_TASK)
def audit_checkpoint() -> dict[str, int]:
    """Seal the audit events committed since the last turn, then sign and write a checkpoint of
    the chain's head if it moved (docs/audit.md); one process writes a checkpoint at a time, the
    others find the lock taken and return."""
    written = 0
    while (outcome := checkpointer().checkpoint_once()) is not None:
        written += 1
        if not outcome.more:
            break
    return {"written": written}


MAIL_DNS_TASK = "outbox.check_mail_dns"


@app.task(name=MAIL_DNS_TASK, acks_late=True, expires=300)
def check_mail_dns() -> dict[str, int]:
    """Check each mail subdomain whose periodic check this process claims (one per interval
    across all workers); a failing subdomain that enforces its checks is blocked from sending."""
    return {"checked": run_due_dns_checks(runtime())}


DELIVER_TASK = "outbox.deliver_notifications"


@app.task(name=DELIVER_TASK, acks_late=True, expires=60)
def deliver_notifications() -> dict[str, int]:
    """Durable Slack calls and callbacks: each due delivery is leased, made, and rescheduled
    with backoff (Slack's Retry-After honoured) if it fails. Losing this message loses nothing:
    the next sweep sends another."""
    report = deliver_due(runtime())
    return {"delivered": len(report.delivered), "retrying": len(report.retrying), "dead": len(report.dead)}
