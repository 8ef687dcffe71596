"""Drive one load with wrk and read its result: the Lua script benchmarks/wrk/post_action.lua sets
the method, JSON body, Authorization and a fresh Idempotency-Key per request, counts the answers
and prints one `WRK_RESULT {json}` line from wrk's `done()`, parsed here.

wrk is an event-loop load generator in C: one thread sends tens of thousands of requests per
second on loopback (the bare FastAPI endpoint answers ~10,000/s here, and wrk then uses about a
third of a core), so it is far from the bottleneck at the gate's rates. The CPU it used is
measured for every run and printed, so a run where it mattered shows it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "wrk" / "post_action.lua"
WRK = shutil.which("wrk") or "/usr/bin/wrk"


@dataclass(frozen=True)
class Shape:
    """wrk's -t, -c, -d and --timeout."""

    threads: int = 2
    connections: int = 16
    seconds: float = 15.0
    timeout_seconds: float = 60.0

    def describe(self) -> str:
        return f"wrk -t{self.threads} -c{self.connections} -d{self.seconds:g}s"


@dataclass(frozen=True)
class Load:
    """What every request of one run carries, and the status it should get."""

    body: dict[str, object]
    token: str
    expect: int
    nonce: str  # prefix of the fresh Idempotency-Keys
    key: str | None = None  # a fixed Idempotency-Key (replays); None: a fresh key per request
    prefer: str | None = None
    rate: float = 0.0  # requests per second for all connections together; 0: as fast as answered


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[int, int] = field(default_factory=dict)
    unexpected: int = 0
    replayed: int = 0
    socket_errors: int = 0
    wrk_cpu_seconds: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def expected_rps(self) -> float:
        """Answers with the expected status per second."""
        return (self.requests - self.unexpected) / self.seconds

    def count(self, status: int) -> int:
        return self.statuses.get(status, 0)

    @property
    def wrk_cores(self) -> float:
        return self.wrk_cpu_seconds / self.seconds


def run_wrk(url: str, load: Load, shape: Shape) -> WrkResult:
    """Run wrk against `url` (scheme, host and port; the script sets the path) and parse its line."""
    env = dict(os.environ)
    env.update(
        {
            "BENCH_BODY": json.dumps(load.body, separators=(",", ":")),
            "BENCH_TOKEN": load.token,
            "BENCH_EXPECT": str(load.expect),
            # Fresh per wrk run: each run's keys start again at 1, and must not replay another's.
            "BENCH_NONCE": f"{load.nonce}-{uuid.uuid4().hex[:8]}",
            "BENCH_THREADS": str(shape.threads),
            "BENCH_RATE": f"{load.rate:.3f}",
        }
    )
    for name, value in (("BENCH_KEY", load.key), ("BENCH_PREFER", load.prefer)):
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    argv = [
        WRK,
        f"-t{shape.threads}",
        f"-c{shape.connections}",
        f"-d{shape.seconds:g}s",
        f"--timeout={shape.timeout_seconds:g}s",
        "-s",
        str(SCRIPT),
        url,
    ]
    # wrk is the only child reaped while it runs, so the children's CPU delta is wrk's own.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise SystemExit(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return _parse(completed.stdout, cpu)


def _parse(output: str, cpu_seconds: float) -> WrkResult:
    line = next((ln for ln in output.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no result line:\n{output}")
    raw = json.loads(line.removeprefix("WRK_RESULT "))
    return WrkResult(
        requests=int(raw["requests"]),
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        statuses={int(status): int(count) for status, count in raw["statuses"].items()},
        unexpected=int(raw["unexpected"]),
        replayed=int(raw["replayed"]),
        socket_errors=int(raw["socket_errors"]),
        wrk_cpu_seconds=cpu_seconds,
    )
