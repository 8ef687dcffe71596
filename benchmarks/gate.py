"""POST /v1/actions through the whole gate, against a bare endpoint and a durable-insert baseline,
driven by wrk, all in one run.

    python benchmarks/gate.py [--database sqlite|postgresql] [--threads 2] [--connections 16]
                              [--duration 15] [--warmup 2]

Three servers, each one uvicorn process on loopback started by this script with the same flags
(`--no-access-log --log-level warning`, uvicorn's default event loop and HTTP parser), one after
another (never two at once: the machine has 2 cores, and wrk takes its share with 2 threads):

a. **bare FastAPI** (benchmarks/_bare_app.py): parses the JSON body, answers 202.
b. **durable insert** (benchmarks/_durable_app.py): writes one row per request with SQLAlchemy
   Core on the outbox's own engine settings and commits it (its docstring says why it is fair).
c. **the outbox** (`uvicorn --factory outbox.api.app:create_app`, what `outbox serve` runs),
   embedded mode (workers, sweeper and audit checkpointer on threads in the same process), on the
   shipped policies with `policies/http.yaml` opened for the target (below). Its loads, in order:
   - **allowed** (202): `http.request` GET to the target; each request authenticates the key,
     validates, claims its Idempotency-Key, decides with Casbin, commits the action and its audit
     events and wakes a worker. While it runs, the actions executed (succeeded or failed, counted
     in the database) give **executed/s**; after it stops, the time the backlog takes to drain.
   - **half load**: the allowed load paced at half the rate just measured (wrk2 is not installed:
     the Lua script gives each request the next free slot of a fixed schedule; a slot missed is
     not made up for, so latency is the service time of each request, without wrk2's correction
     for coordinated omission). Gives p99/p50 below saturation.
   - **denied** (403): the same call to `/admin/…` of the target, which the shipped rules deny
     to `http-reader`; the denial is recorded as an action, like in production.
   - **replay**: one Idempotency-Key, used once before the load and run to the end, then
     repeated by every request: each answer is the action as it is now, 200 `succeeded`
     (`Idempotent-Replayed: true`, counted), read without a write lock.
   - **end to end**, `Prefer: wait=30`: the allowed call, answered when the action is terminal
     (200); completed actions per second.
d. **the target** of `http.request`: benchmarks/_target.py, an asyncio server answering 200
   (~170,000 req/s with keep-alive here), so it never limits the workers.

Each load is wrk (`-t2 -c16 -d15s` by default) with benchmarks/wrk/post_action.lua: a fresh
Idempotency-Key per request (per-run nonce, thread number, counter), answers with any other
status than expected are counted and printed. Before the measured loads of a server a short
warm-up (same load) runs and, for the outbox, its backlog drains.

Printed: req/s, p50 and p99 per load, the CPU the server and wrk used (wrk stays well below a
core at these rates; a column shows it), then the ratios: gate/durable-insert and gate/bare per
path, executed/accepted, half-load p99/p50, with the goals of issue 12 beside them.

With `--database postgresql` a fresh database is created for the run (127.0.0.1:5432) and
dropped after; the durable-insert baseline writes its table into the same database.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from _servers import (
    ActionCounts,
    bench_environment,
    cpu_seconds,
    free_port,
    load_average,
    outbox_cli,
    serving,
)
from _wrk import Load, Shape, WrkResult, run_wrk

UVICORN_FLAGS = ["--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"]
# The issue-12 goals, printed beside the measured ratios.
GOAL_GATE_OVER_DURABLE = 1.0
GOAL_GATE_OVER_BARE = 0.25
GOAL_EXECUTED_OVER_ACCEPTED = 0.9
GOAL_HALF_LOAD_P99_OVER_P50 = 5.0
GOAL_WAIT_COMPLETED_PER_S = 240.0  # 10x the 24/s measured when the issue was filed


@dataclass
class Bench:
    """One run's setup: its directory, the outbox's environment, the database, the target."""

    args: argparse.Namespace
    workdir: Path
    env: dict[str, str]
    database_url: str
    target_port: int
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    token: str = ""

    @property
    def shape(self) -> Shape:
        return Shape(self.args.threads, self.args.connections, self.args.duration)

    def body(self, path: str) -> dict[str, object]:
        return {"tool": "http.request", "args": {"method": "GET", "url": f"http://127.0.0.1:{self.target_port}{path}"}}

    def load(
        self, expect: int, path: str = "/ping", *, key: str | None = None, prefer: str | None = None, rate: float = 0
    ) -> Load:
        return Load(self.body(path), self.token, expect, self.nonce, key=key, prefer=prefer, rate=rate)

    def cli(self, *argv: str) -> str:
        return outbox_cli(self.env, self.workdir, *argv)


@dataclass
class Row:
    """One measured load and what the server used meanwhile."""

    name: str
    result: WrkResult
    server_cores: float
    note: str = ""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (-t)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (-c)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per load (-d)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per server (0: none)")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="longest wait for a backlog to drain")
    return parser.parse_args()


@contextmanager
def bench_setup(args: argparse.Namespace) -> Iterator[Bench]:
    """Working directory, database, target and agent; everything removed on the way out."""
    with ExitStack() as stack:
        workdir, target_port, env = bench_environment(stack, database=args.database, prefix="outbox-bench")
        bench = Bench(args, workdir, env, env["OUTBOX_DATABASE_URL"], target_port)
        bench.cli("db", "upgrade")
        bench.token = bench.cli("agents", "create", "bench", "--role", "http-reader")
        yield bench


def measure(name: str, url: str, pid: int, load: Load, shape: Shape, note: str = "") -> Row:
    before = cpu_seconds(pid)
    result = run_wrk(url, load, shape)
    row = Row(name, result, (cpu_seconds(pid) - before) / result.seconds, note)
    print_row(row)
    return row


def print_header(bench: Bench) -> None:
    print(
        f"database {bench.args.database}; {bench.shape.describe()} per load; "
        f"{os.cpu_count()} CPUs, {load_average()}; one uvicorn process per server, one server at a time\n"
    )
    print(
        f"{'load':<36} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'unexpected':>10} "
        f"{'server CPU':>10} {'wrk CPU':>8}  note"
    )


def print_row(row: Row) -> None:
    r = row.result
    unexpected = f"{r.unexpected}" + (f"+{r.socket_errors}e" if r.socket_errors else "")
    print(
        f"{row.name:<36} {r.rps:>9.1f} {r.p50_ms:>9.2f} {r.p99_ms:>9.2f} {unexpected:>10} "
        f"{row.server_cores:>9.2f}c {r.wrk_cores:>7.2f}c  {row.note}",
        flush=True,
    )
    if r.unexpected:
        print(f"{'':<36} statuses {dict(sorted(r.statuses.items()))}", flush=True)


def uvicorn(app: str, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "uvicorn", *extra, app, "--port", str(port), *UVICORN_FLAGS]


def measure_baseline(bench: Bench, name: str, app: str, env: dict[str, str]) -> Row:
    """A baseline server: warm up, then one measured load of the allowed body."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serving(uvicorn(app, port), env=env, cwd=bench.workdir, log=bench.workdir / f"{port}.log", ready_url=url) as p:
        if bench.args.warmup > 0:
            run_wrk(url, bench.load(202), Shape(bench.args.threads, bench.args.connections, bench.args.warmup))
        return measure(name, url, p.pid, bench.load(202), bench.shape)


@dataclass
class GateRows:
    allowed: Row
    half: Row
    denied: Row
    replay: Row
    wait: Row
    executed_per_s: float
    backlog: int
    drain_seconds: float
    drain_left: int
    statuses: dict[str, int]
    failure: str | None  # how one failed action reads through the API, if any failed


def measure_gate(bench: Bench) -> GateRows:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    counts = ActionCounts(bench.database_url)
    argv = uvicorn("outbox.api.app:create_app", port, "--factory")
    log = bench.workdir / "outbox.log"
    try:
        with serving(argv, env=bench.env, cwd=bench.workdir, log=log, ready_url=url) as process:
            return _gate_loads(bench, url, process.pid, counts)
    finally:
        counts.dispose()


def _gate_loads(bench: Bench, url: str, pid: int, counts: ActionCounts) -> GateRows:
    args, shape = bench.args, bench.shape
    if args.warmup > 0:
        run_wrk(url, bench.load(202), Shape(args.threads, args.connections, args.warmup))
        counts.wait_drained(args.drain_timeout)
    executed_before = counts.executed()
    allowed = measure("c. gate allowed (202)", url, pid, bench.load(202), shape)
    executed_per_s = (counts.executed() - executed_before) / allowed.result.seconds
    backlog = counts.in_flight()
    drain_seconds, drain_left = counts.wait_drained(args.drain_timeout)
    rate = allowed.result.expected_rps / 2
    half = measure(
        "f. gate allowed at half load", url, pid, bench.load(202, rate=rate), shape, note=f"paced at {rate:.1f}/s"
    )
    counts.wait_drained(args.drain_timeout)
    denied = measure("c. gate denied (403)", url, pid, bench.load(403, path="/admin/users"), shape)
    replay_key = f"{bench.nonce}-replayed"
    first = httpx.post(
        f"{url}/v1/actions",
        json=bench.body("/ping"),
        headers={"Authorization": f"Bearer {bench.token}", "Idempotency-Key": replay_key},
        timeout=30,
    )
    if first.status_code != 202:
        raise SystemExit(f"the replay key's first request answered {first.status_code}: {first.text}")
    # A replay answers with the action as it is now: once it has run, 200.
    counts.wait_drained(args.drain_timeout)
    replay = measure("c. gate replay (200)", url, pid, bench.load(200, key=replay_key), shape)
    counts.wait_drained(args.drain_timeout)
    wait_shape = Shape(args.threads, args.connections, args.duration, timeout_seconds=45)
    wait = measure("e. end to end, Prefer: wait=30 (200)", url, pid, bench.load(200, prefer="wait=30"), wait_shape)
    counts.wait_drained(args.drain_timeout)
    statuses = counts.by_status()
    return GateRows(
        allowed,
        half,
        denied,
        replay,
        wait,
        executed_per_s,
        backlog,
        drain_seconds,
        drain_left,
        statuses,
        describe_failure(bench, url, counts) if statuses.get("failed") else None,
    )


def describe_failure(bench: Bench, url: str, counts: ActionCounts) -> str | None:
    """One failed action as its agent reads it: a target that always answers 200 should never
    fail, so a failure means the figures do not measure a working pipeline."""
    action_id = counts.one_with_status("failed")
    if action_id is None:
        return None
    answer = httpx.get(f"{url}/v1/actions/{action_id}", headers={"Authorization": f"Bearer {bench.token}"}, timeout=30)
    return answer.text[:1500]


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.3f}" if denominator else "n/a"


def print_summary(bare: Row, durable: Row, gate: GateRows) -> None:
    print("\nthroughput ratios (answers with the expected status per second)")
    print(f"{'path':<10} {'gate/durable-insert':>20} {'gate/bare':>10}")
    for name, row in (("allowed", gate.allowed), ("denied", gate.denied), ("replay", gate.replay)):
        rps = row.result.expected_rps
        print(f"{name:<10} {ratio(rps, durable.result.expected_rps):>20} {ratio(rps, bare.result.expected_rps):>10}")
    print(f"goals (allowed): gate/durable-insert >= {GOAL_GATE_OVER_DURABLE}, gate/bare >= {GOAL_GATE_OVER_BARE}")
    print(f"replayed answers: {gate.replay.result.replayed} of {gate.replay.result.requests}")

    accepted = gate.allowed.result.count(202) / gate.allowed.result.seconds
    drained = "drained" if not gate.drain_left else f"NOT drained ({gate.drain_left} left)"
    print("\nworkers while the allowed load ran")
    print(
        f"accepted {accepted:.1f}/s, executed {gate.executed_per_s:.1f}/s, executed/accepted "
        f"{ratio(gate.executed_per_s, accepted)} (goal >= {GOAL_EXECUTED_OVER_ACCEPTED})"
    )
    drain_rate = f", {gate.backlog / gate.drain_seconds:.1f}/s" if gate.backlog and gate.drain_seconds else ""
    print(f"backlog when the load stopped: {gate.backlog} actions, {drained} in {gate.drain_seconds:.1f} s{drain_rate}")

    half = gate.half.result
    print("\nhalf load")
    print(
        f"paced at half of {gate.allowed.result.expected_rps:.1f}/s: achieved {half.rps:.1f}/s, "
        f"p50 {half.p50_ms:.2f} ms, p99 {half.p99_ms:.2f} ms, p99/p50 {ratio(half.p99_ms, half.p50_ms)} "
        f"(goal <= {GOAL_HALF_LOAD_P99_OVER_P50})"
    )

    wait = gate.wait.result
    completed = wait.count(200) / wait.seconds
    print("\nend to end, Prefer: wait=30")
    print(
        f"completed {completed:.1f} actions/s (goal >= {GOAL_WAIT_COMPLETED_PER_S:.0f}), p50 {wait.p50_ms:.1f} ms, "
        f"p99 {wait.p99_ms:.1f} ms; {wait.count(202)} answered 202 (not settled within 30 s)"
    )
    print(f"\nactions by status at the end: {dict(sorted(gate.statuses.items()))}")
    print(f"machine at the end: {load_average()}")
    if gate.failure is not None:
        print(f"\nWARNING: {gate.statuses['failed']} actions failed against a target that answers 200; one of them:")
        print(gate.failure)


def main() -> None:
    args = parse_args()
    with bench_setup(args) as bench:
        print_header(bench)
        bare = measure_baseline(bench, "a. bare FastAPI", "benchmarks._bare_app:app", bench.env)
        durable_env = {
            **bench.env,
            "BENCH_DATABASE_URL": (
                bench.database_url if args.database == "postgresql" else f"sqlite:///{bench.workdir}/durable/durable.db"
            ),
            "BENCH_DATA_DIR": str(bench.workdir / "durable"),
        }
        durable = measure_baseline(bench, "b. durable insert", "benchmarks._durable_app:app", durable_env)
        gate = measure_gate(bench)
        print_summary(bare, durable, gate)


if __name__ == "__main__":
    main()
