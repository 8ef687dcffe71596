"""The metrics counted where events happen: decisions, executions, sweeps, approval waits, HTTP.

Process-local. Celery's prefork pool runs tasks in child processes, so workers count in
prometheus-client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`) and the worker's main process
serves the sum of its children (`outbox.metrics.servers.start_worker_metrics_server`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

if TYPE_CHECKING:
    from outbox.policy.store import ActivePolicy


# Process-local metrics. In multiprocess mode the values live in files under
# PROMETHEUS_MULTIPROC_DIR and this registry is not what gets exposed (see `_process_source`).
REGISTRY = CollectorRegistry()
# `*_created` series double the series count and no dashboard or alert here uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

EXECUTION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
APPROVAL_BUCKETS = (15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

DECISIONS = Counter(
    "outbox_decisions",
    "Policy decisions on submitted calls, by effect (allow, deny, approve) and tool.",
    ["effect", "tool"],
    registry=REGISTRY,
)
SHADOW_DECISIONS = Counter(
    "outbox_shadow_decisions",
    "Submissions the shadow policy decided too (never enforced; docs/shadow-policy.md), by tool.",
    ["tool"],
    registry=REGISTRY,
)
SHADOW_DISAGREEMENTS = Counter(
    "outbox_shadow_disagreements",
    "Shadow decisions whose outcome differs from the live one, by tool and change kind "
    "(allow-to-deny, gate-changed, …; one submission may count under several kinds).",
    ["tool", "change"],
    registry=REGISTRY,
)
EXECUTIONS = Counter(
    "outbox_executions",
    "Executions by tool and outcome (the status the action moved to; `queued` is a retry, "
    "`lease_lost` a result that came after the lease expired).",
    ["tool", "outcome"],
    registry=REGISTRY,
)
EXECUTION_SECONDS = Histogram(
    "outbox_execution_duration_seconds",
    "Time a tool took to execute one attempt, by tool and outcome.",
    ["tool", "outcome"],
    buckets=EXECUTION_BUCKETS,
    registry=REGISTRY,
)
APPROVAL_WAIT_SECONDS = Histogram(
    "outbox_approval_wait_seconds",
    "Time from an approval request to its outcome (approved, rejected, expired, cancelled).",
    ["outcome"],
    buckets=APPROVAL_BUCKETS,
    registry=REGISTRY,
)
SWEEPS = Counter(
    "outbox_sweeper_actions",
    "Actions the sweeper repaired, by kind: republished (message lost or slow), resumed "
    "(deferred window reopened), lease_expired (worker died, queued again), exhausted (worker "
    "died on the last attempt), approval_expired.",
    ["kind"],
    registry=REGISTRY,
)
SWEEP_RUNS = Counter("outbox_sweeper_runs", "Sweeper passes completed.", registry=REGISTRY)
HTTP_REQUESTS = Counter(
    "outbox_http_requests",
    "API requests by method, route template and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "outbox_http_request_duration_seconds",
    "API request latency by method and route template.",
    ["method", "route"],
    buckets=HTTP_BUCKETS,
    registry=REGISTRY,
)
WORKER_POLICY = Gauge(
    "outbox_worker_policy_info",
    "1 for the policy version a worker process last executed with (workers re-check policy before running a call).",
    ["version", "git_commit"],
    registry=REGISTRY,
    multiprocess_mode="livemax",
)

_SWEEP_KINDS = ("republished", "resumed", "lease_expired", "exhausted", "approval_expired")


def record_decision(effect: str, tool: str) -> None:
    DECISIONS.labels(effect=effect, tool=tool).inc()


def record_shadow_decision(tool: str, changes: list[str]) -> None:
    """One shadow decision and each way it differs from the live one (change kinds)."""
    SHADOW_DECISIONS.labels(tool=tool).inc()
    for change in changes:
        SHADOW_DISAGREEMENTS.labels(tool=tool, change=change).inc()


def observe_execution(tool: str, outcome: str, seconds: float) -> None:
    EXECUTIONS.labels(tool=tool, outcome=outcome).inc()
    EXECUTION_SECONDS.labels(tool=tool, outcome=outcome).observe(max(seconds, 0.0))


def observe_approval_wait(seconds: float, outcome: str) -> None:
    """For the approval flow: call once when a request is decided, expires or is cancelled."""
    APPROVAL_WAIT_SECONDS.labels(outcome=outcome).observe(max(seconds, 0.0))


def record_sweep(**counts: int) -> None:
    """Count one sweeper pass: `record_sweep(republished=3, resumed=0, …)`."""
    for kind, count in counts.items():
        if kind not in _SWEEP_KINDS:
            raise ValueError(f"unknown sweep kind {kind!r}")
        if count:
            SWEEPS.labels(kind=kind).inc(count)
    SWEEP_RUNS.inc()


def observe_http(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
    HTTP_SECONDS.labels(method=method, route=route).observe(max(seconds, 0.0))


class _WorkerPolicyGauge:
    """Which policy version this worker process executes with: one series at 1, the
    previous one set back to 0 on change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: tuple[str, str] | None = None

    def note(self, policy: ActivePolicy) -> None:
        current = (policy.version, policy.snapshot.git_commit or "")
        if current == self._seen:
            return
        with self._lock:
            if self._seen is not None and self._seen != current:
                WORKER_POLICY.labels(*self._seen).set(0)
            WORKER_POLICY.labels(*current).set(1)
            self._seen = current


_worker_policy = _WorkerPolicyGauge()


def note_worker_policy(policy: ActivePolicy) -> None:
    """Record the policy a worker executes with (cheap when unchanged)."""
    _worker_policy.note(policy)
