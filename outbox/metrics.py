"""Prometheus metrics: definitions, the collectors that read the database, and the hook through
which other modules (mail budgets, breakers, pauses) publish their state.

Two kinds of numbers, with different sources:

- **Events**, counted in the process where they happen: decisions in the API, executions and
  sweeps in workers, approval waits where a human decides. Celery's prefork pool runs tasks in
  child processes, so workers count in prometheus-client's multiprocess mode
  (`PROMETHEUS_MULTIPROC_DIR`) and the worker's main process serves the sum of its children on
  `OUTBOX_WORKER_METRICS_PORT` (`start_worker_metrics_server`).
- **State**, read from the database when `/metrics` is scraped: actions by state, queue lag,
  approval backlog, expired leases. The database is the truth every replica shares, so every API
  replica reports the same values: aggregate them with `max()`, never `sum()`.

All names start with `outbox_`. Labels are bounded: tools come from the policy directory,
effects and statuses are enums, subdomains come from the mail configuration.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import func
from sqlmodel import col, select

from outbox.actions.models import Action, ActionStatus
from outbox.sqltypes import utcnow

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from outbox.db import Database
    from outbox.policy.store import ActivePolicy
    from outbox.runtime import Runtime

__all__ = [
    "CONTENT_TYPE_LATEST",
    "BudgetUse",
    "MetricsSettings",
    "QueueState",
    "SubdomainHealth",
    "multiprocess_dir",
    "note_worker_policy",
    "observe_approval_wait",
    "observe_execution",
    "observe_http",
    "read_queue_state",
    "read_registered",
    "record_decision",
    "record_sweep",
    "register_collector",
    "render_metrics",
    "start_worker_metrics_server",
    "unregister_collector",
]


class MetricsSettings(BaseSettings):
    """The metrics endpoints' own settings (same `OUTBOX_` prefix and `.env` as the rest)."""

    model_config = SettingsConfigDict(env_prefix="OUTBOX_", env_file=".env", extra="ignore")

    # Port on which `outbox worker` serves its metrics; unset means workers serve none.
    worker_metrics_port: int | None = None
    worker_metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped from outside the pod/container
    # When set, `/metrics` on the API answers only `Authorization: Bearer <token>`.
    metrics_token: str | None = None


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


# --- State from other modules: the registration hook -------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetUse:
    """How much of one cap a sending subdomain has used in the current window."""

    subdomain: str
    cap: str  # e.g. "hour", "day", "warm_up_day"
    used: int
    limit: int


@dataclass(frozen=True, slots=True)
class SubdomainHealth:
    """The sending state of one mail subdomain, for `/metrics` and `outbox status`."""

    subdomain: str
    breaker_tripped: bool
    paused: bool
    dns_ok: bool | None = None
    detail: str = ""


Reading = BudgetUse | SubdomainHealth | Metric
StateCollector = Callable[["Runtime"], Iterable[Reading]]

_collectors: dict[str, StateCollector] = {}
_collectors_lock = threading.Lock()


def register_collector(name: str, collect: StateCollector) -> None:
    """Publish state another module owns, read at scrape time (and by `outbox status`).

    `collect(runtime)` returns `BudgetUse` and `SubdomainHealth` records, which become the
    canonical `outbox_mail_*` families, or any prometheus-client `Metric` family (names must start
    with `outbox_`). It runs on every scrape: keep it to a few indexed queries. An exception is
    reported as `outbox_metrics_collector_up{collector=name} 0`, never as a failed scrape.
    Registering the same name again replaces the earlier collector (module reloads in tests).
    """
    with _collectors_lock:
        _collectors[name] = collect


def unregister_collector(name: str) -> None:
    with _collectors_lock:
        _collectors.pop(name, None)


@dataclass
class CollectorResult:
    name: str
    readings: list[Reading] = field(default_factory=list)
    error: str | None = None


def read_registered(runtime: Runtime) -> list[CollectorResult]:
    with _collectors_lock:
        registered = list(_collectors.items())
    results: list[CollectorResult] = []
    for name, collect in registered:
        try:
            results.append(CollectorResult(name, list(collect(runtime))))
        except Exception as exc:  # one broken collector must not take the scrape down
            results.append(CollectorResult(name, error=f"{type(exc).__name__}: {exc}"))
    return results


def _registered_families(results: list[CollectorResult]) -> Iterator[Metric]:
    used = GaugeMetricFamily(
        "outbox_mail_budget_used", "Units of a sending cap used in its current window.", labels=["subdomain", "cap"]
    )
    limit = GaugeMetricFamily(
        "outbox_mail_budget_limit", "The cap in force for the current window.", labels=["subdomain", "cap"]
    )
    tripped = GaugeMetricFamily(
        "outbox_mail_breaker_tripped", "1 when the bounce/complaint breaker has tripped.", labels=["subdomain"]
    )
    paused = GaugeMetricFamily(
        "outbox_mail_paused", "1 when sending is paused (breaker, kill switch, operator).", labels=["subdomain"]
    )
    dns_ok = GaugeMetricFamily(
        "outbox_mail_dns_ok", "1 when SPF, DKIM and DMARC checks last passed.", labels=["subdomain"]
    )
    others: list[Metric] = []
    for result in results:
        for reading in result.readings:
            if isinstance(reading, BudgetUse):
                used.add_metric([reading.subdomain, reading.cap], reading.used)
                limit.add_metric([reading.subdomain, reading.cap], reading.limit)
            elif isinstance(reading, SubdomainHealth):
                tripped.add_metric([reading.subdomain], float(reading.breaker_tripped))
                paused.add_metric([reading.subdomain], float(reading.paused))
                if reading.dns_ok is not None:
                    dns_ok.add_metric([reading.subdomain], float(reading.dns_ok))
            elif reading.name.startswith("outbox_"):
                others.append(reading)
    for family in (used, limit, tripped, paused, dns_ok, *others):
        if family.samples:
            yield family


# --- State from the database ---------------------------------------------------------------


@dataclass(frozen=True)
class QueueState:
    measured_at: datetime
    by_status: dict[str, int]
    # Queued and due now (not_before unset or passed): what workers should be running.
    due: int
    oldest_due_since: datetime | None
    # Running with an expired lease: a worker died and the sweeper has not repaired it yet.
    leases_expired: int
    awaiting_approval: int
    oldest_approval_since: datetime | None
    # Lease owners (`host:pid:thread`) of running actions.
    running_owners: list[str]

    @property
    def lag_seconds(self) -> float:
        """Age of the oldest due queued action; 0 when nothing waits."""
        if self.oldest_due_since is None:
            return 0.0
        return max((self.measured_at - self.oldest_due_since).total_seconds(), 0.0)

    @property
    def oldest_approval_seconds(self) -> float:
        if self.oldest_approval_since is None:
            return 0.0
        return max((self.measured_at - self.oldest_approval_since).total_seconds(), 0.0)


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


def _queue_families(state: QueueState) -> Iterator[Metric]:
    by_status = GaugeMetricFamily("outbox_actions", "Actions by status (from the database).", labels=["status"])
    for status, count in sorted(state.by_status.items()):
        by_status.add_metric([status], count)
    yield by_status
    yield GaugeMetricFamily(
        "outbox_queue_due_actions", "Queued actions that are due now (waiting for a worker).", value=state.due
    )
    yield GaugeMetricFamily(
        "outbox_queue_lag_seconds",
        "Age of the oldest due queued action: how long work has waited for a worker (0 when none).",
        value=state.lag_seconds,
    )
    yield GaugeMetricFamily(
        "outbox_leases_expired_actions",
        "Running actions whose lease expired: a worker died and the sweeper has not re-queued them.",
        value=state.leases_expired,
    )
    yield GaugeMetricFamily(
        "outbox_approvals_pending", "Actions awaiting a human approval.", value=state.awaiting_approval
    )
    yield GaugeMetricFamily(
        "outbox_approval_oldest_pending_seconds",
        "Age of the oldest action awaiting approval (0 when none).",
        value=state.oldest_approval_seconds,
    )
    yield GaugeMetricFamily(
        "outbox_running_workers", "Distinct lease owners holding running actions.", value=len(state.running_owners)
    )


def _policy_families(runtime: Runtime) -> Iterator[Metric]:
    active = runtime.policy.current
    info = InfoMetricFamily("outbox_policy", "The policy version this process serves.")
    info.add_metric([], {"version": active.version, "git_commit": active.snapshot.git_commit or ""})
    yield info
    yield GaugeMetricFamily(
        "outbox_policy_loaded_timestamp_seconds",
        "When the running policy was loaded (Unix time).",
        value=active.snapshot.loaded_at.timestamp(),
    )
    yield GaugeMetricFamily(
        "outbox_policy_reload_failing",
        "1 when the last reload failed and the previous policy is still running.",
        value=float(runtime.policy.last_failure is not None),
    )


# --- Exposition ----------------------------------------------------------------------------


def multiprocess_dir() -> Path | None:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def _process_source() -> Any:
    if multiprocess_dir() is None:
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


class _Scrape:
    """Everything one `/metrics` answer holds; `generate_latest` only needs `collect()`."""

    def __init__(self, runtime: Runtime | None) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        yield from _process_source().collect()
        if self.runtime is None:
            return
        up = GaugeMetricFamily(
            "outbox_metrics_collector_up", "1 when a state collector answered on this scrape.", labels=["collector"]
        )
        yield from _policy_families(self.runtime)
        try:
            families = list(_queue_families(read_queue_state(self.runtime.db)))
            up.add_metric(["database"], 1)
        except Exception:  # the database is down: say so in the metrics, still answer
            families = []
            up.add_metric(["database"], 0)
        yield from families
        results = read_registered(self.runtime)
        for result in results:
            up.add_metric([result.name], float(result.error is None))
        yield from _registered_families(results)
        yield up


def render_metrics(runtime: Runtime | None) -> bytes:
    """The Prometheus text exposition for this process, plus database state when a runtime is given."""
    return generate_latest(_Scrape(runtime))


def start_worker_metrics_server(port: int, host: str = "0.0.0.0") -> WSGIServer:  # noqa: S104
    """Serve the metrics of a Celery worker's whole process tree from its main process.

    Tasks run in forked pool processes whose counters the main process cannot see, so this needs
    multiprocess mode: PROMETHEUS_MULTIPROC_DIR set, before start, to an empty directory of this
    worker's own. Files left from an earlier run of the same worker are removed here, before the
    pool forks.
    """
    directory = multiprocess_dir()
    if directory is None:
        raise RuntimeError(
            "OUTBOX_WORKER_METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR: tasks run in forked pool "
            "processes, whose metrics are shared through files in that directory. Set it to an "
            "empty directory used by this worker only (a tmpfs or emptyDir)."
        )
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    from prometheus_client import multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


def mark_worker_process_dead(pid: int) -> None:
    """Drop a finished pool process's live gauges (multiprocess mode only)."""
    directory = multiprocess_dir()
    if directory is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path=str(directory))  # type: ignore[no-untyped-call]
