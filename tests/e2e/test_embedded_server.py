"""The embedded default, end to end: `outbox serve` under real uvicorn on SQLite."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import POLICIES
from tests.support.http_target import TargetServer
from tests.support.processes import free_port, kill, outbox_env, run_cli, start, stop, wait_ready, wait_until

pytestmark = pytest.mark.slow


@dataclass
class EmbeddedServer:
    workdir: Path
    env: dict[str, str]
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "serve.log"

    def start(self) -> None:
        self.process = start(["serve", "--port", str(self.port)], self.env, self.workdir, self.log)
        wait_ready(self.url, self.process, self.log)

    def agent(self, name: str, *roles: str) -> str:
        return run_cli(["agents", "create", name, *[a for r in roles for a in ("--role", r)]], self.env, self.workdir)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    shutil.copytree(POLICIES, tmp_path / "policies")
    # Defaults as a newcomer gets them (SQLite under .outbox/, policies/), short leases for the crash test.
    env = outbox_env(OUTBOX_LEASE_SECONDS="3", OUTBOX_SWEEP_INTERVAL_SECONDS="0.5", OUTBOX_REPUBLISH_AFTER_SECONDS="2")
    embedded = EmbeddedServer(tmp_path, env, free_port())
    yield embedded
    if embedded.process is not None:
        stop(embedded.process)


def submit(url: str, key: str, idem: str, target: str, wait: int | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idem}
    if wait is not None:
        headers["Prefer"] = f"wait={wait}"
    return httpx.post(
        f"{url}/v1/actions",
        json={"tool": "http.request", "args": {"method": "POST", "url": target, "json": {"n": 1}}},
        headers=headers,
        timeout=70,
    )


def test_fifty_concurrent_requests_with_one_key_make_one_action_and_one_execution(
    server: EmbeddedServer, target_server: TargetServer
) -> None:
    key = server.agent("parallel", "http-writer")
    server.start()

    def once(_: int) -> httpx.Response:
        return submit(server.url, key, "one-key", f"{target_server.base_url}/v1/charge")

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(once, range(50)))

    codes = [r.status_code for r in responses]
    # Answered with the one action as it is now: 202 pending, or 200 once it has run.
    assert set(codes) <= {200, 202, 409}, codes
    assert all(r.json()["status"] == "succeeded" for r in responses if r.status_code == 200)
    ids = {r.json()["id"] for r in responses if r.status_code in (200, 202)}
    assert len(ids) == 1
    assert all(r.headers["retry-after"] == "1" for r in responses if r.status_code == 409)
    action_id = ids.pop()
    assert wait_until(
        lambda: (
            httpx.get(f"{server.url}/v1/actions/{action_id}", headers={"Authorization": f"Bearer {key}"}).json()[
                "status"
            ]
            == "succeeded"
        ),
        timeout=30,
    )
    assert len(target_server.received("/v1/charge")) == 1
    replay = submit(server.url, key, "one-key", f"{target_server.base_url}/v1/charge")
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == action_id
    assert replay.status_code == 200
    assert replay.json()["status"] == "succeeded"
    assert len(target_server.received("/v1/charge")) == 1


def test_a_killed_server_loses_nothing_after_restart(server: EmbeddedServer, target_server: TargetServer) -> None:
    key = server.agent("survivor", "http-writer")
    server.start()
    ids = [submit(server.url, key, f"k{n}", f"{target_server.base_url}/slow/2").json()["id"] for n in range(4)]
    assert wait_until(lambda: len(target_server.received("/slow/")) >= 1, timeout=20)
    assert server.process is not None
    kill(server.process)  # SIGKILL mid-action: no shutdown, no cleanup

    server.start()
    headers = {"Authorization": f"Bearer {key}"}

    def all_done() -> bool:
        return all(
            httpx.get(f"{server.url}/v1/actions/{i}", headers=headers).json()["status"] == "succeeded" for i in ids
        )

    assert wait_until(all_done, timeout=60), [
        httpx.get(f"{server.url}/v1/actions/{i}", headers=headers).json() for i in ids
    ]
    attempts = [httpx.get(f"{server.url}/v1/actions/{i}", headers=headers).json()["attempts"] for i in ids]
    assert max(attempts) >= 2  # at least the one that was running when the server died ran again
    assert run_cli(["audit", "verify"], server.env, server.workdir).startswith("audit chain intact")


def test_prefer_wait_through_real_uvicorn(server: EmbeddedServer, target_server: TargetServer) -> None:
    key = server.agent("waiter", "http-writer")
    server.start()
    response = submit(server.url, key, "w", f"{target_server.base_url}/v1/x", wait=30)
    assert response.status_code == 200
    assert response.headers["preference-applied"] == "wait=30"
    assert response.json()["status"] == "succeeded"


def test_the_recorded_client_is_the_tcp_peer_not_a_forwarded_for_header(server: EmbeddedServer) -> None:
    # X-Forwarded-For is any sender's claim: `outbox serve` never takes it for the client address
    # (the console trusts an identity header only from a configured proxy's own address).
    key = server.agent("forwarded", "http-reader")
    server.start()

    denied = httpx.post(
        f"{server.url}/v1/actions",
        json={"tool": "http.request", "args": {"method": "GET", "url": "http://127.0.0.1:9/admin/x"}},
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "fwd", "X-Forwarded-For": "203.0.113.9"},
        timeout=30,
    )
    assert denied.status_code == 403, denied.text
    with sqlite3.connect(server.workdir / ".outbox" / "outbox.db") as db:
        (recorded,) = db.execute("SELECT request FROM actions WHERE id = ?", (denied.json()["action_id"],)).fetchone()
    assert json.loads(recorded)["client"] == "127.0.0.1"
