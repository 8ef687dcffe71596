"""What the benchmarks share: loopback ports, servers they start and stop, the PostgreSQL database
of a run, the CPU a process tree used, and the actions table counted by status."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("server did not become ready")


def create_database(prefix: str) -> str:
    """A fresh PostgreSQL database for one benchmark run; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def drop_database(url: str) -> None:
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


@contextlib.contextmanager
def serving(
    argv: list[str], *, env: Mapping[str, str], cwd: Path, log: Path, ready_url: str | None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server process (output to `log`), wait until `ready_url`/readyz answers 200 (if
    given), and stop it on the way out. A server that dies shows the end of its log."""
    with log.open("ab") as out:
        process = subprocess.Popen(argv, env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        if ready_url is not None:
            try:
                wait_ready(ready_url, process)
            except SystemExit:
                sys.stderr.write(log.read_text(errors="replace")[-4000:])
                raise
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """SIGTERM (uvicorn and Celery shut down gracefully on it), then SIGKILL after `timeout`."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def load_average() -> str:
    """The 1- and 5-minute load averages: other work on the machine skews every figure, and
    this says whether there was some."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process and its live descendants (uvicorn --workers, Celery's
    pool), from /proc; 0 for a process that is gone."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces) close with ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        child = int(entry)
        children.setdefault(int(fields[1]), []).append(child)
        times[child] = (int(fields[11]) + int(fields[12])) / ticks
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        total += times.get(current, 0.0)
        stack.extend(children.get(current, []))
    return total


# Where an action stands, for counting from outside the server (the database is the truth).
EXECUTED = ("succeeded", "failed")
IN_FLIGHT = ("received", "queued", "running", "deferred")


class ActionCounts:
    """Counts the outbox's actions by status, on its database, from the benchmark process."""

    def __init__(self, database_url: str) -> None:
        self._engine = create_engine(database_url, poolclass=NullPool)

    def by_status(self) -> dict[str, int]:
        with self._engine.connect() as connection:
            rows = connection.execute(text("SELECT status, count(*) FROM actions GROUP BY status")).all()
        return {str(status): int(count) for status, count in rows}

    def one_with_status(self, status: str) -> str | None:
        with self._engine.connect() as connection:
            found = connection.execute(
                text("SELECT id FROM actions WHERE status = :status LIMIT 1"), {"status": status}
            ).scalar()
        return None if found is None else str(found)

    def executed(self) -> int:
        counts = self.by_status()
        return sum(counts.get(status, 0) for status in EXECUTED)

    def in_flight(self) -> int:
        counts = self.by_status()
        return sum(counts.get(status, 0) for status in IN_FLIGHT)

    def wait_drained(self, timeout: float, poll: float = 0.2) -> tuple[float, int]:
        """Wait until no action is in flight; returns (seconds waited, actions still in flight)."""
        started = time.perf_counter()
        while (left := self.in_flight()) and time.perf_counter() - started < timeout:
            time.sleep(poll)
        return time.perf_counter() - started, left

    def dispose(self) -> None:
        self._engine.dispose()


@contextlib.contextmanager
def target_server(workdir: Path) -> Iterator[int]:
    """benchmarks/_target.py on a free loopback port (yielded), answering 200 to anything."""
    port = free_port()
    argv = [sys.executable, str(REPO / "benchmarks" / "_target.py"), str(port)]
    with serving(argv, env=os.environ, cwd=workdir, log=workdir / "target.log", ready_url=None):
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        else:
            raise SystemExit(f"the target on port {port} did not start")
        yield port


def write_policies(workdir: Path, target_port: int) -> Path:
    """The shipped policies in `workdir/policies`, with the target's limits out of the way (the
    shipped defaults allow 60 requests a minute per host) and without mail (no email tool, no mail
    sink: mail has its own benchmark)."""
    policies = workdir / "policies"
    shutil.copytree(REPO / "policies", policies)
    (policies / "mail.yaml").unlink(missing_ok=True)
    http = yaml.safe_load((policies / "http.yaml").read_text())
    http.setdefault("hosts", {})[f"127.0.0.1:{target_port}"] = {
        "requests_per_minute": 1_000_000,
        "max_concurrent": 16,
    }
    (policies / "http.yaml").write_text(yaml.safe_dump(http))
    return policies


def outbox_cli(env: Mapping[str, str], cwd: Path, *argv: str) -> str:
    """Run `outbox <argv>` (the CLI a user runs) and return what it printed on stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "outbox.cli.main", *argv],
        env=dict(env),
        cwd=cwd,
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"outbox {' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def bench_environment(stack: contextlib.ExitStack, *, database: str, prefix: str) -> tuple[Path, int, dict[str, str]]:
    """A working directory with the shipped policies pointed at a fresh target server, and a
    database (SQLite in it, or a new PostgreSQL database); everything is removed when `stack`
    closes. Returns (workdir, target port, the environment an outbox process runs with)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    stack.callback(shutil.rmtree, workdir, True)
    target_port = stack.enter_context(target_server(workdir))
    write_policies(workdir, target_port)
    if database == "postgresql":
        database_url = create_database(prefix.replace("-", "_"))
        stack.callback(drop_database, database_url)
    else:
        database_url = f"sqlite:///{workdir}/.outbox/outbox.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    env.update(
        {
            "OUTBOX_DATABASE_URL": database_url,
            "OUTBOX_DATA_DIR": str(workdir / ".outbox"),
            "OUTBOX_POLICY_DIR": str(workdir / "policies"),
            "OUTBOX_LOG_LEVEL": "WARNING",
            "OUTBOX_POLICY_WATCH": "false",
            "PYTHONPATH": str(REPO),
        }
    )
    return workdir, target_port, env
