"""Exposition: the `/metrics` answer of an API process and the metrics server of a worker."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest, multiprocess, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from pydantic_settings import BaseSettings, SettingsConfigDict

from outbox.metrics.collectors import (
    QueueState,
    policy_families,
    queue_families,
    read_registered,
    registered_families,
)
from outbox.metrics.definitions import REGISTRY

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from outbox.db import Database
    from outbox.runtime import Runtime

# Reads the action queue from the database (`outbox.execution.queue_state.read_queue_state`).
QueueReader = Callable[["Database"], QueueState]


class MetricsSettings(BaseSettings):
    """The metrics endpoints' own settings (same `OUTBOX_` prefix and `.env` as the rest)."""

    model_config = SettingsConfigDict(env_prefix="OUTBOX_", env_file=".env", extra="ignore")

    # Port on which `outbox worker` serves its metrics; unset means workers serve none.
    worker_metrics_port: int | None = None
    worker_metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped from outside the pod/container
    # When set, `/metrics` on the API answers only `Authorization: Bearer <token>`.
    metrics_token: str | None = None


def multiprocess_dir() -> Path | None:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def _process_source() -> Any:
    if multiprocess_dir() is None:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


class _Scrape:
    """Everything one `/metrics` answer holds; `generate_latest` only needs `collect()`."""

    def __init__(self, runtime: Runtime | None, read_queue: QueueReader | None) -> None:
        self.runtime = runtime
        self.read_queue = read_queue

    def collect(self) -> Iterator[Metric]:
        yield from _process_source().collect()
        if self.runtime is None:
            return
        up = GaugeMetricFamily(
            "outbox_metrics_collector_up", "1 when a state collector answered on this scrape.", labels=["collector"]
        )
        yield from policy_families(self.runtime)
        if self.read_queue is not None:
            try:
                families = list(queue_families(self.read_queue(self.runtime.db)))
                up.add_metric(["database"], 1)
            except Exception:  # the database is down: say so in the metrics, still answer
                families = []
                up.add_metric(["database"], 0)
            yield from families
        results = read_registered(self.runtime)
        for result in results:
            up.add_metric([result.name], float(result.error is None))
        yield from registered_families(results)
        yield up


def render_metrics(runtime: Runtime | None, read_queue: QueueReader | None = None) -> bytes:
    """The Prometheus text exposition for this process; with a runtime, the policy it serves and
    the state registered collectors publish; with `read_queue` as well, the action queue."""
    return generate_latest(_Scrape(runtime, read_queue))


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
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


def mark_worker_process_dead(pid: int) -> None:
    """Drop a finished pool process's live gauges (multiprocess mode only)."""
    directory = multiprocess_dir()
    if directory is not None:
        multiprocess.mark_process_dead(pid, path=str(directory))  # type: ignore[no-untyped-call]
