"""End to end: the production topology of scripts/prod-local.sh, as real processes.

The API (after `outbox db upgrade`), two Celery workers and beat run on the local PostgreSQL (a
database the script creates, dropped afterwards) and Redis (DB 4). Agent calls go in over HTTP
and reach a real HTTP server; metrics, status and logs are read as an operator would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.support.http_target import TargetServer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "prod-local.sh"
PG_ADMIN_URL = os.environ.get("OUTBOX_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = "redis://127.0.0.1:6379/4"
# The CLI installed next to the interpreter running the tests.
OUTBOX_BIN = Path(sys.executable).parent / "outbox"
CALLS = 6


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def require(service: str, check: Any) -> None:
    try:
        check()
    except Exception as exc:
        if os.environ.get(f"OUTBOX_TEST_REQUIRE_{service.upper()}") == "1":
            pytest.fail(f"{service} required but unreachable: {exc}")
        pytest.skip(f"{service} unreachable ({type(exc).__name__}: {exc}); production topology not tested")


def pg_connect() -> psycopg.Connection[Any]:
    return psycopg.connect(
        PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True, connect_timeout=3
    )


@dataclass
class Topology:
    env: dict[str, str]
    run_dir: Path
    api: str
    worker_metrics: list[str]
    process: subprocess.Popen[bytes]

    def outbox(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(OUTBOX_BIN), *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.run_dir.glob("*.log"))
        )


def _wait_until_ready(topology: Topology, console: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if topology.process.poll() is not None:
            pytest.fail(f"prod-local.sh exited early:\n{console.read_text()}\n{topology.logs()}")
        if (topology.run_dir / "ready").exists():
            return
        time.sleep(0.3)
    pytest.fail(f"prod-local.sh not ready in time:\n{console.read_text()}\n{topology.logs()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    require("postgres", lambda: pg_connect().close())
    require("redis", lambda: redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping())
    if not OUTBOX_BIN.exists():
        pytest.skip(f"no {OUTBOX_BIN}: the script runs the installed CLI")
    redis.Redis.from_url(REDIS_URL).flushdb()

    database = f"outbox_deploy_{uuid.uuid4().hex[:12]}"
    run_dir = tmp_path / "run"
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies)
    api_port, metrics_ports = free_port(), [free_port(), free_port()]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "PROMETHEUS_"))}
    script_env = {
        **base,
        "OUTBOX_BIN": str(OUTBOX_BIN),
        "OUTBOX_PROD_LOCAL_DB": database,
        "PG_ADMIN_URL": PG_ADMIN_URL,
        "OUTBOX_BROKER_URL": REDIS_URL,
        "OUTBOX_POLICY_DIR": str(policies),
        "OUTBOX_LOG_LEVEL": "INFO",
        "PROD_LOCAL_DIR": str(run_dir),
        "API_PORT": str(api_port),
        "WORKER_METRICS_PORTS": " ".join(map(str, metrics_ports)),
    }
    console = tmp_path / "prod-local.out"
    with console.open("wb") as out:
        process = subprocess.Popen(
            ["bash", str(SCRIPT)],
            env=script_env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    topology = Topology(
        env={},
        run_dir=run_dir,
        api=f"http://127.0.0.1:{api_port}",
        worker_metrics=[f"http://127.0.0.1:{port}/metrics" for port in metrics_ports],
        process=process,
    )
    try:
        _wait_until_ready(topology, console, time.monotonic() + 120)
        # The CLI as an operator runs it next to the script: same database, broker, token.
        topology.env = {
            **base,
            "OUTBOX_ENVIRONMENT": "production",
            "OUTBOX_DATABASE_URL": PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}",
            "OUTBOX_BROKER_URL": REDIS_URL,
            "OUTBOX_POLICY_DIR": str(policies),
            "OUTBOX_ADMIN_TOKEN": (run_dir / "admin-token").read_text().strip(),
        }
        yield topology
    finally:
        _stop(process)
        pids = [int(p.read_text()) for p in run_dir.glob("*.pid")]
        with pg_connect() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        redis.Redis.from_url(REDIS_URL).flushdb()
        survivors = [pid for pid in pids if _alive(pid)]
        assert not survivors, f"prod-local.sh left processes running: {survivors}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(scraped: list[dict[tuple[str, frozenset[tuple[str, str]]], float]], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for s in scraped for (n, ls), v in s.items() if n == name and wanted <= ls)


def _wait_for_workers(topology: Topology, count: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        result = topology.outbox("status", "--json", "--api", topology.api, "--timeout", "1")
        assert result.returncode == 0, result.stdout + result.stderr
        report: dict[str, Any] = json.loads(result.stdout)
        if len(report["workers"]["celery_ping"].get("nodes", [])) >= count or time.monotonic() > deadline:
            return report
        time.sleep(0.5)


def test_production_topology_executes_calls_submitted_over_http(
    topology: Topology, target_server: TargetServer
) -> None:
    report = _wait_for_workers(topology, 2)
    assert [n.split("@")[0] for n in report["workers"]["celery_ping"]["nodes"]] == ["worker1", "worker2"]
    assert report["policy"]["api"]["version"] == report["policy"]["version"]

    created = topology.outbox("agents", "create", "deploy-e2e", "--role", "http-reader")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()

    def call(n: int) -> httpx.Response:
        return httpx.post(
            f"{topology.api}/v1/actions",
            json={"tool": "http.request", "args": {"method": "GET", "url": f"{target_server.base_url}/orders/{n}"}},
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": f"e2e-{n}", "Prefer": "wait=45"},
            timeout=60,
        )

    with ThreadPoolExecutor(CALLS) as pool:
        responses = list(pool.map(call, range(CALLS)))

    assert [r.status_code for r in responses] == [200] * CALLS, [r.text for r in responses]
    assert {r.json()["status"] for r in responses} == {"succeeded"}
    assert sorted(r.path for r in target_server.received("/orders/")) == sorted(f"/orders/{n}" for n in range(CALLS))

    # The API's metrics: decisions it made and the state of the database.
    api = samples(httpx.get(f"{topology.api}/metrics", timeout=10).text)
    assert total([api], "outbox_decisions_total", effect="allow", tool="http.request") == CALLS
    assert total([api], "outbox_actions", status="succeeded") == CALLS
    assert total([api], "outbox_queue_due_actions") == 0
    # Each worker's metrics: the sum over its forked pool processes (multiprocess mode).
    # A worker counts an execution just after recording it, so the answer may overtake the count.
    deadline = time.monotonic() + 10
    while True:
        workers = [samples(httpx.get(url, timeout=10).text) for url in topology.worker_metrics]
        succeeded = total(workers, "outbox_executions_total", tool="http.request", outcome="succeeded")
        if succeeded >= CALLS or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert succeeded == CALLS
    assert total(workers, "outbox_execution_duration_seconds_count", tool="http.request", outcome="succeeded") == CALLS
    assert total(workers, "outbox_sweeper_runs_total") > 0, "beat schedules the sweeper"
    assert total(workers, "outbox_worker_policy_info", version=report["policy"]["version"]) >= 1

    status = topology.outbox("status")
    assert status.returncode == 0
    assert f"succeeded          {CALLS:>8}" in status.stdout

    # Logs: JSON lines, the API's with request id, agent and action id; never a key or token.
    api_lines = [
        json.loads(line) for line in (topology.run_dir / "api.log").read_text().splitlines() if line.startswith("{")
    ]
    submissions = [
        line for line in api_lines if line.get("event") == "http.request" and line.get("path") == "/v1/actions"
    ]
    assert len(submissions) == CALLS
    assert {line["action_id"] for line in submissions} == {r.json()["id"] for r in responses}
    assert all(line["agent"] == "deploy-e2e" and line["request_id"] for line in submissions)
    executed = [
        json.loads(line)
        for name in ("worker1.log", "worker2.log")
        for line in (topology.run_dir / name).read_text().splitlines()
        if line.startswith("{") and '"action.executed"' in line
    ]
    assert {line["action_id"] for line in executed} == {r.json()["id"] for r in responses}
    everything = "\n".join(p.read_text(errors="replace") for p in topology.run_dir.glob("*.log"))
    assert key not in everything
    assert topology.env["OUTBOX_ADMIN_TOKEN"] not in everything
