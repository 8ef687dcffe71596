"""Prometheus metrics: what happened (counted where it happens) and what is (read at scrape time).

- `definitions`: the event metrics (decisions in the API, the shadow policy's decisions,
  executions and sweeps in workers, approval waits where a human decides, HTTP requests) and the
  functions that record them.
- `collectors`: state read when `/metrics` is scraped: the action queue (`QueueState`, read by
  `outbox.execution.queue_state`), the policy, and the hook (`register_collector`) through which
  other modules (mail budgets, breakers, pauses) publish theirs. Metrics imports no domain.
- `servers`: the exposition: `render_metrics` for the API's `/metrics`, and the metrics server of
  a Celery worker, which sums its pool processes in multiprocess mode.

All names start with `outbox_`. Labels are bounded: tools come from the policy directory,
effects and statuses are enums, subdomains come from the mail configuration. Callers import what
they need from `outbox.metrics`; the names below are the package's API.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from outbox.metrics.collectors import (
    BudgetUse,
    CollectorResult,
    QueueState,
    Reading,
    StateCollector,
    SubdomainHealth,
    read_registered,
    register_collector,
    unregister_collector,
)
from outbox.metrics.definitions import (
    REGISTRY,
    note_worker_policy,
    observe_approval_wait,
    observe_execution,
    observe_http,
    record_decision,
    record_shadow_decision,
    record_sweep,
)
from outbox.metrics.servers import (
    MetricsSettings,
    QueueReader,
    mark_worker_process_dead,
    multiprocess_dir,
    render_metrics,
    start_worker_metrics_server,
)

__all__ = [
    "CONTENT_TYPE_LATEST",
    "REGISTRY",
    "BudgetUse",
    "CollectorResult",
    "MetricsSettings",
    "QueueReader",
    "QueueState",
    "Reading",
    "StateCollector",
    "SubdomainHealth",
    "mark_worker_process_dead",
    "multiprocess_dir",
    "note_worker_policy",
    "observe_approval_wait",
    "observe_execution",
    "observe_http",
    "read_registered",
    "record_decision",
    "record_shadow_decision",
    "record_sweep",
    "register_collector",
    "render_metrics",
    "start_worker_metrics_server",
    "unregister_collector",
]
