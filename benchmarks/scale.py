"""The production topology on one machine: PostgreSQL, Redis, Celery workers and beat, API processes;
1 vs 2 API processes and 1 vs 2 worker processes, in one run.

    python benchmarks/scale.py [--threads 2] [--connections 16] [--duration 15] [--warmup 2]
                               [--rounds 1] [--drain-timeout 120] [--worker-concurrency 1] [--without-beat]

Everything runs on loopback, started by this script the way docker-compose.yml runs it: a fresh
PostgreSQL database (127.0.0.1:5432, dropped at the end) migrated with `outbox db upgrade`; Redis
database 13 as the broker (flushed before and after; nothing else here uses it); API processes
`uvicorn --factory outbox.api.app:create_app [--workers 2]` (what `outbox serve [--workers 2]`
runs: uvicorn's own multi-process mode on one port); worker nodes `outbox worker --concurrency 1` (one
node per worker process, like `docker compose --scale worker=N`); one `outbox beat` (sweeper and
audit checkpoints) while workers run. The `http.request` target is benchmarks/_target.py and the
load is wrk with benchmarks/wrk/post_action.lua, as in benchmarks/gate.py (allowed path, 202).

Phases, one after another on the same database:

1. **Together**, 1 API + 1 worker, then 2 API + 2 workers, under the allowed load: accepted/s
   and completed/s during the load; then, without load, how long the backlog left takes to
   drain (at most `--drain-timeout` seconds). The first load meets an empty queue.
2. **API alone**, 1 then 2 API processes, no worker running: accepted requests per second. The
   accepted actions wait in Redis and the database; they are the next phase's backlog.
3. **Workers alone**, 1 then 2 worker processes draining that backlog (no API load): completed
   actions per second (succeeded or failed, counted in the database) over a window of
   `--duration` seconds that starts `--warmup` seconds after the first action completes (every
   worker is up and has built its runtime), or until the backlog runs out.

With beat running, queued actions older than 5 s are published again by the sweeper, as in
production under a backlog: a worker then also takes duplicates, each a claim that finds the
action done or taken. `--without-beat` leaves beat out.

With `--rounds N` phases 2 and 3 alternate 1 and 2 processes N times (1, 2, 1, 2, ...) and the
ratios are of the medians, which evens out other work on the machine drifting during the run.

Printed: each phase's figures, then the ratios 2 API / 1 API (accepted/s), 2 workers / 1 worker
(completed/s) and together 2+2 / 1+1 (completed/s), with the issue-12 goals beside them. On a
2-core machine two processes of anything share the same two cores with PostgreSQL, Redis, the
target and wrk: the ratios say whether a second process adds throughput (no global lock, no
single-writer bottleneck), not what a bigger machine would do.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from _servers import (
    REPO,
    ActionCounts,
    cpu_seconds,
    create_database,
    drop_database,
    free_port,
    load_average,
    outbox_cli,
    serving,
    target_server,
    write_policies,
)
from _wrk import Load, Shape, WrkResult, run_wrk
from celery import Celery

BROKER_URL = "redis://127.0.0.1:6379/13"  # a database number nothing else here uses
GOAL_API_SCALING = 1.6
GOAL_WORKER_SCALING = 1.8


@dataclass
class Topology:
    """One run's setup: its directory, the processes' environment, the database and the agent."""

    args: argparse.Namespace
    workdir: Path
    env: dict[str, str]
    database_url: str
    target_port: int
    token: str
    counts: ActionCounts
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    @property
    def shape(self) -> Shape:
        return Shape(self.args.threads, self.args.connections, self.args.duration)

    def load(self) -> Load:
        body: dict[str, object] = {
            "tool": "http.request",
            "args": {"method": "GET", "url": f"http://127.0.0.1:{self.target_port}/ping"},
        }
        return Load(body, self.token, 202, self.nonce)

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"


@dataclass
class ApiRow:
    name: str
    result: WrkResult
    api_cores: float
    completed_per_s: float | None = None


@dataclass
class WorkerRow:
    name: str
    completed: int
    seconds: float
    worker_cores: float
    ran_out: bool

    @property
    def completed_per_s(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (-t)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (-c)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per load and per worker window")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up load per API start (0: none)")
    parser.add_argument("--worker-concurrency", type=int, default=1, help="Celery pool processes per worker node")
    parser.add_argument(
        "--rounds", type=int, default=1, help="alternate 1 and 2 processes this many times; ratios of the medians"
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=120.0, help="longest wait for a backlog to drain after phase 1"
    )
    parser.add_argument("--without-beat", action="store_true", help="run no beat (no sweeper re-publishing)")
    return parser.parse_args()


def flush_broker() -> None:
    redis.Redis.from_url(BROKER_URL).flushdb()


@contextmanager
def topology_setup(args: argparse.Namespace) -> Iterator[Topology]:
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="outbox-scale-"))
        stack.callback(shutil.rmtree, workdir, True)
        target_port = stack.enter_context(target_server(workdir))
        write_policies(workdir, target_port)
        database_url = create_database("outbox_scale")
        stack.callback(drop_database, database_url)
        flush_broker()
        stack.callback(flush_broker)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
        env.update(
            {
                "OUTBOX_DATABASE_URL": database_url,
                "OUTBOX_BROKER_URL": BROKER_URL,
                "OUTBOX_DATA_DIR": str(workdir / ".outbox"),
                "OUTBOX_POLICY_DIR": str(workdir / "policies"),
                "OUTBOX_LOG_LEVEL": "WARNING",
                "OUTBOX_POLICY_WATCH": "false",
                "PYTHONPATH": str(REPO),
            }
        )
        outbox_cli(env, workdir, "db", "upgrade")
        token = outbox_cli(env, workdir, "agents", "create", "bench", "--role", "http-reader")
        counts = ActionCounts(database_url)
        stack.callback(counts.dispose)
        yield Topology(args, workdir, env, database_url, target_port, token, counts)


@contextmanager
def api_processes(topology: Topology, processes: int) -> Iterator[tuple[str, int]]:
    """The API on a free port, `processes` uvicorn workers; yields its URL and the parent's pid."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "uvicorn", "--factory", "outbox.api.app:create_app", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    if processes > 1:
        argv += ["--workers", str(processes)]
    log = topology.log(f"api-{processes}")
    with serving(argv, env=topology.env, cwd=topology.workdir, log=log, ready_url=url) as process:
        if topology.args.warmup > 0:
            warmup = Shape(topology.args.threads, topology.args.connections, topology.args.warmup)
            run_wrk(url, topology.load(), warmup)  # also gives every uvicorn worker time to start
        yield url, process.pid


@contextmanager
def celery_workers(topology: Topology, nodes: int) -> Iterator[list[int]]:
    """`nodes` worker nodes (and beat, unless --without-beat), answering pings; yields their pids."""
    host = socket.gethostname()
    names = [f"bench{n}-{topology.nonce}@{host}" for n in range(1, nodes + 1)]
    concurrency = str(topology.args.worker_concurrency)
    with ExitStack() as stack:
        pids = []
        for name in names:
            argv = [sys.executable, "-m", "outbox.cli.main", "worker", "--concurrency", concurrency]
            argv += ["--loglevel", "WARNING", "--hostname", name]
            log = topology.log(name.split("@")[0])
            process = stack.enter_context(
                serving(argv, env=topology.env, cwd=topology.workdir, log=log, ready_url=None)
            )
            pids.append(process.pid)
        if not topology.args.without_beat:
            argv = [sys.executable, "-m", "outbox.cli.main", "beat", "--loglevel", "WARNING"]
            stack.enter_context(
                serving(argv, env=topology.env, cwd=topology.workdir, log=topology.log("beat"), ready_url=None)
            )
        wait_for_workers(names)
        yield pids


def wait_for_workers(names: list[str], timeout: float = 60.0) -> None:
    control = Celery(broker=BROKER_URL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            replies = control.control.ping(destination=names, timeout=1.0) or []
            answered = {name for reply in replies for name in reply}
            if answered >= set(names):
                return
        raise SystemExit(f"Celery workers did not answer pings within {timeout:.0f} s: {names}")
    finally:
        control.close()


def measure_api_alone(topology: Topology, processes: int) -> ApiRow:
    with api_processes(topology, processes) as (url, pid):
        before = cpu_seconds(pid)
        result = run_wrk(url, topology.load(), topology.shape)
        row = ApiRow(f"{processes} API process{'es' if processes > 1 else ''}", result, 0.0)
        row.api_cores = (cpu_seconds(pid) - before) / result.seconds
    print_api_row(row)
    return row


def measure_workers_alone(topology: Topology, nodes: int) -> WorkerRow:
    counts = topology.counts
    with celery_workers(topology, nodes) as pids:
        started = time.monotonic()
        first = counts.executed()
        while counts.executed() == first and counts.in_flight() and time.monotonic() - started < 60:
            time.sleep(0.1)  # until the first completion: the workers are up and busy
        # Every pool process builds its runtime on its first task: give the slowest time to.
        time.sleep(topology.args.warmup)
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        executed_before, window_start = counts.executed(), time.monotonic()
        while time.monotonic() - window_start < topology.args.duration and counts.in_flight():
            time.sleep(0.25)
        seconds = time.monotonic() - window_start
        completed = counts.executed() - executed_before
        cores = (sum(cpu_seconds(pid) for pid in pids) - cpu_before) / seconds
        ran_out = counts.in_flight() == 0
    row = WorkerRow(f"{nodes} worker process{'es' if nodes > 1 else ''}", completed, seconds, cores, ran_out)
    note = "  (the backlog ran out: a lower bound)" if ran_out else ""
    print(
        f"{row.name:<28} {row.completed_per_s:>9.1f} completed/s over {seconds:4.1f} s   worker CPU {cores:.2f}c{note}",
        flush=True,
    )
    return row


def measure_together(topology: Topology, processes: int) -> ApiRow:
    """API and workers under the allowed load; then the backlog left drains, with no load."""
    counts = topology.counts
    with celery_workers(topology, processes), api_processes(topology, processes) as (url, pid):
        before, executed_before = cpu_seconds(pid), counts.executed()
        result = run_wrk(url, topology.load(), topology.shape)
        completed_per_s = (counts.executed() - executed_before) / result.seconds
        row = ApiRow(
            f"{processes} API + {processes} worker{'s' if processes > 1 else ''}", result, 0.0, completed_per_s
        )
        row.api_cores = (cpu_seconds(pid) - before) / result.seconds
        print_api_row(row)
        backlog, drain_start = counts.in_flight(), counts.executed()
        seconds, left = counts.wait_drained(topology.args.drain_timeout)
    drained = "drained" if not left else f"NOT drained ({left} left)"
    rate = (counts.executed() - drain_start) / seconds if seconds else 0.0
    print(f"{'':<28} backlog when the load stopped: {backlog}, {drained} in {seconds:.1f} s ({rate:.1f} completed/s)")
    return row


def print_api_row(row: ApiRow) -> None:
    r = row.result
    completed = f"   completed {row.completed_per_s:7.1f}/s" if row.completed_per_s is not None else ""
    unexpected = f"   unexpected {r.unexpected} {dict(sorted(r.statuses.items()))}" if r.unexpected else ""
    print(
        f"{row.name:<28} {r.expected_rps:>9.1f} accepted/s   p50 {r.p50_ms:7.2f} ms   p99 {r.p99_ms:8.2f} ms"
        f"   API CPU {row.api_cores:.2f}c   wrk CPU {r.wrk_cores:.2f}c{completed}{unexpected}",
        flush=True,
    )


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}" if denominator else "n/a"


def print_ratios(
    api: dict[int, list[float]], workers: dict[int, list[float]], together: list[float], rounds: int
) -> None:
    """The scaling ratios, of the medians when there were several rounds."""
    label = f" (medians of {rounds} rounds)" if rounds > 1 else ""
    api_1, api_2 = statistics.median(api[1]), statistics.median(api[2])
    workers_1, workers_2 = statistics.median(workers[1]), statistics.median(workers[2])
    print(f"\nratios{label}")
    print(
        f"2 API / 1 API (accepted/s):          {ratio(api_2, api_1):>6} (goal >= {GOAL_API_SCALING})"
        f"   {api_2:.1f} / {api_1:.1f}"
    )
    print(
        f"2 workers / 1 worker (completed/s):  {ratio(workers_2, workers_1):>6} (goal >= {GOAL_WORKER_SCALING})"
        f"   {workers_2:.1f} / {workers_1:.1f}"
    )
    print(
        f"together 2+2 / 1+1 (completed/s):    {ratio(together[1], together[0]):>6}"
        f"              {together[1]:.1f} / {together[0]:.1f}"
    )


def main() -> None:
    args = parse_args()
    with topology_setup(args) as topology:
        beat = "no beat" if args.without_beat else "one beat"
        print(
            f"PostgreSQL (fresh database), Redis {BROKER_URL}, {beat}, worker nodes --concurrency "
            f"{args.worker_concurrency}; {topology.shape.describe()} per load;\n"
            f"{os.cpu_count()} CPUs, {load_average()}\n"
        )
        rounds = range(args.rounds)
        # Together first: the first load meets an empty queue and database.
        print("1. together, under the allowed load, then the backlog drains")
        together = [measure_together(topology, n).completed_per_s or 0.0 for n in (1, 2)]
        print("\n2. API alone (no workers: accepted actions wait in Redis)")
        api: dict[int, list[float]] = {1: [], 2: []}
        for _ in rounds:
            for n in (1, 2):
                api[n].append(measure_api_alone(topology, n).result.expected_rps)
        print(f"\n3. workers alone (draining the {topology.counts.in_flight()} actions accepted above)")
        workers: dict[int, list[float]] = {1: [], 2: []}
        for _ in rounds:
            for n in (1, 2):
                workers[n].append(measure_workers_alone(topology, n).completed_per_s)
        print_ratios(api, workers, together, args.rounds)
        print(f"\nactions by status at the end: {dict(sorted(topology.counts.by_status().items()))}")
        print(f"machine at the end: {load_average()}")


if __name__ == "__main__":
    try:
        main()
    except httpx.HTTPError as exc:
        raise SystemExit(f"scale benchmark failed: {exc}") from exc
