"""State read when `/metrics` is scraped (and by `outbox status`), never counted in a process.

Two sources: the action queue (actions by state, queue lag, approval backlog, expired leases),
read from the database by the reader the edge hands to `render_metrics`
(`outbox.execution.queue_state.read_queue_state`), and the state other modules own (mail budgets,
breakers, pauses), published through `register_collector`. The database is the truth every
replica shares, so every API replica reports the same values: aggregate them with `max()`, never
`sum()`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric

if TYPE_CHECKING:
    from outbox.runtime import Runtime


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


def registered_families(results: list[CollectorResult]) -> Iterator[Metric]:
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


# --- The action queue ---------------------------------------------------------------


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


def queue_families(state: QueueState) -> Iterator[Metric]:
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


def policy_families(runtime: Runtime) -> Iterator[Metric]:
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
    yield from _shadow_policy_families(runtime)


def _shadow_policy_families(runtime: Runtime) -> Iterator[Metric]:
    """The shadow policy's version and reload state (docs/shadow-policy.md), when one is configured."""
    shadow = runtime.shadow_policy
    if shadow is None:
        return
    active = shadow.current
    info = InfoMetricFamily("outbox_shadow_policy", "The shadow policy version this process decides with.")
    info.add_metric([], {"version": active.version, "git_commit": active.snapshot.git_commit or ""})
    yield info
    yield GaugeMetricFamily(
        "outbox_shadow_policy_reload_failing",
        "1 when the last reload of the shadow policy failed and the previous shadow is still deciding.",
        value=float(shadow.last_failure is not None),
    )
