"""The production path, end to end: uvicorn API + real Celery workers + beat on PostgreSQL and Redis.

Covers what the broker may do to us: deliver twice, lose a worker mid-action, lose every message
(FLUSHALL). The database is the truth, so every action still ends exactly once.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import POLICIES, _truncate_postgres
from tests.support.http_target import TargetServer
from tests.support.processes import free_port, kill, outbox_env, run_cli, start, stop, wait_ready, wait_until

pytestmark = pytest.mark.slow

REDIS_URL = "redis://127.0.0.1:6379/1"


@dataclass
class Topology:
    workdir: Path
    env: dict[str, str]
    port: int
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    beat: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_api(self, processes: int = 1) -> None:
        log = self.workdir / "api.log"
        argv = ["serve", "--port", str(self.port), "--workers", str(processes)]
        self.api = start(argv, self.env, self.workdir, log)
        wait_ready(self.url, self.api, log)

    def start_worker(self) -> subprocess.Popen[bytes]:
        n = len(self.workers)
        worker = start(
            ["worker", "--concurrency", "2", "--loglevel", "WARNING"],
            self.env,
            self.workdir,
            self.workdir / f"worker{n}.log",
        )
        self.workers.append(worker)
        return worker

    def start_beat(self) -> None:
        self.beat = start(["beat", "--loglevel", "WARNING"], self.env, self.workdir, self.workdir / "beat.log")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.workdir.glob("*.log")))

    def agent(self, name: str) -> str:
        return run_cli(["agents", "create", name, "--role", "http-writer"], self.env, self.workdir)

    def submit(self, key: str, idem: str, url: str) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/actions",
            json={"tool": "http.request", "args": {"method": "POST", "url": url}},
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idem},
            timeout=30,
        )

    def action(self, key: str, action_id: str) -> dict[str, object]:
        body: dict[str, object] = httpx.get(
            f"{self.url}/v1/actions/{action_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10
        ).json()
        return body


@pytest.fixture
def topology(postgres_server: str, redis_available: None, tmp_path: Path) -> Iterator[Topology]:
    _truncate_postgres(postgres_server)
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()
    shutil.copytree(POLICIES, tmp_path / "policies")
    env = outbox_env(
        OUTBOX_DATABASE_URL=postgres_server,
        OUTBOX_BROKER_URL=REDIS_URL,
        OUTBOX_LEASE_SECONDS="4",
        OUTBOX_SWEEP_INTERVAL_SECONDS="0.5",
        OUTBOX_REPUBLISH_AFTER_SECONDS="2",
    )
    running = Topology(tmp_path, env, free_port())
    yield running
    for process in [running.api, running.beat, *running.workers]:
        if process is not None:
            stop(process)


def test_actions_run_through_celery_workers(topology: Topology, target_server: TargetServer) -> None:
    topology.start_api()
    topology.start_worker()
    topology.start_beat()
    key = topology.agent("celery-bot")
    ids = [topology.submit(key, f"k{n}", f"{target_server.base_url}/v1/c{n}").json()["id"] for n in range(10)]

    assert wait_until(lambda: all(topology.action(key, i)["status"] == "succeeded" for i in ids), 60), topology.logs()
    assert len(target_server.received("/v1/c")) == 10


def test_fifty_concurrent_requests_with_one_key_execute_once(topology: Topology, target_server: TargetServer) -> None:
    topology.start_api()
    topology.start_worker()
    topology.start_beat()
    key = topology.agent("parallel-bot")
    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(
            pool.map(lambda _: topology.submit(key, "same", f"{target_server.base_url}/v1/pay"), range(50))
        )

    # Answered with the one action as it is now: 202 pending, or 200 once it has run.
    assert {r.status_code for r in responses} <= {200, 202, 409}
    assert all(r.json()["status"] == "succeeded" for r in responses if r.status_code == 200)
    ids = {r.json()["id"] for r in responses if r.status_code in (200, 202)}
    assert len(ids) == 1
    action_id = ids.pop()
    assert wait_until(lambda: topology.action(key, action_id)["status"] == "succeeded", 60), topology.logs()
    assert len(target_server.received("/v1/pay")) == 1


def test_two_api_processes_share_the_port_and_still_execute_one_key_once(
    topology: Topology, target_server: TargetServer
) -> None:
    topology.start_api(processes=2)
    topology.start_worker()
    topology.start_beat()
    key = topology.agent("two-process-bot")
    with ThreadPoolExecutor(max_workers=50) as pool:
        same = list(pool.map(lambda _: topology.submit(key, "same", f"{target_server.base_url}/v1/once"), range(50)))
        distinct = list(
            pool.map(lambda n: topology.submit(key, f"d{n}", f"{target_server.base_url}/v1/each{n}"), range(20))
        )

    # Answered with the one action as it is now: 202 pending, or 200 once it has run.
    assert {r.status_code for r in same} <= {200, 202, 409}
    assert all(r.json()["status"] == "succeeded" for r in same if r.status_code == 200)
    assert len({r.json()["id"] for r in same if r.status_code in (200, 202)}) == 1
    assert [r.status_code for r in distinct] == [202] * 20
    ids = [r.json()["id"] for r in distinct]
    assert wait_until(lambda: all(topology.action(key, i)["status"] == "succeeded" for i in ids), 60), topology.logs()
    assert len(target_server.received("/v1/once")) == 1
    assert len(target_server.received("/v1/each")) == 20


def test_a_worker_killed_mid_action_is_redriven_by_the_sweeper(topology: Topology, target_server: TargetServer) -> None:
    topology.start_api()
    doomed = topology.start_worker()
    topology.start_beat()
    key = topology.agent("crash-bot")
    action_id = topology.submit(key, "crash", f"{target_server.base_url}/slow/3").json()["id"]
    assert wait_until(lambda: len(target_server.received("/slow/3")) == 1, 30), topology.logs()
    kill(doomed)  # SIGKILL the worker and its children while the request is in flight

    topology.start_worker()
    assert wait_until(lambda: topology.action(key, action_id)["status"] == "succeeded", 90), topology.logs()
    action = topology.action(key, action_id)
    assert action["attempts"] == 2
    assert len(target_server.received("/slow/3")) == 2  # the first attempt was cut off; the retry carries the same key
    keys = {r.headers["idempotency-key"] for r in target_server.received("/slow/3")}
    assert keys == {"crash-bot:crash"}


def test_flushing_redis_with_actions_in_flight_loses_nothing(topology: Topology, target_server: TargetServer) -> None:
    topology.start_api()
    key = topology.agent("flush-bot")
    # No worker yet: the messages sit in Redis, then Redis forgets them all.
    ids = [topology.submit(key, f"f{n}", f"{target_server.base_url}/v1/f{n}").json()["id"] for n in range(20)]
    client = redis.Redis.from_url(REDIS_URL)
    assert client.llen("outbox") == 20
    client.flushall()
    assert client.llen("outbox") == 0
    client.close()

    topology.start_worker()
    topology.start_beat()
    assert wait_until(lambda: all(topology.action(key, i)["status"] == "succeeded" for i in ids), 90), topology.logs()
    assert sorted(r.path for r in target_server.received("/v1/f")) == sorted(f"/v1/f{n}" for n in range(20))
