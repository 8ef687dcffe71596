"""The embedded server checkpoints the audit chain about a second after events commit, once per
head, and `outbox audit verify` (a separate process) checks against what it wrote."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import POLICIES
from tests.support.http_target import TargetServer
from tests.support.processes import OUTBOX, free_port, outbox_env, run_cli, start, stop, wait_ready, wait_until

pytestmark = pytest.mark.slow


def _checkpoints(workdir: Path) -> list[dict[str, int]]:
    path = workdir / ".outbox" / "audit-checkpoints.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["checkpoint"] for line in path.read_text().splitlines() if line.strip()]


def _events(workdir: Path) -> int:
    with contextlib.closing(sqlite3.connect(workdir / ".outbox" / "outbox.db")) as connection:
        return int(connection.execute("SELECT count(*) FROM audit_events").fetchone()[0])


def _verify(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OUTBOX, "audit", "verify"], env=env, cwd=cwd, capture_output=True, text=True, check=False)


def _covered(workdir: Path) -> bool:
    written = _checkpoints(workdir)
    return bool(written) and written[-1]["event_count"] == _events(workdir)


def test_the_embedded_server_checkpoints_each_new_head_once(tmp_path: Path, target_server: TargetServer) -> None:
    shutil.copytree(POLICIES, tmp_path / "policies")
    env = outbox_env()
    key = run_cli(["agents", "create", "bot", "--role", "http-writer"], env, tmp_path)
    port = free_port()
    log = tmp_path / "serve.log"
    server = start(["serve", "--port", str(port)], env, tmp_path, log)
    try:
        wait_ready(f"http://127.0.0.1:{port}", server, log)
        # The agent was created before the server started: its event is covered once it runs.
        assert wait_until(lambda: _covered(tmp_path), 30), log.read_text()[-3000:]
        first = _checkpoints(tmp_path)
        assert len(first) == 1

        time.sleep(3)  # three checkpointer turns with nothing new: nothing written
        assert _checkpoints(tmp_path) == first

        submitted = time.monotonic()
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/actions",
            json={"tool": "http.request", "args": {"method": "POST", "url": f"{target_server.base_url}/v1/x"}},
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "checkpoint-1", "Prefer": "wait=10"},
            timeout=30,
        )
        assert response.status_code in {200, 202}, response.text
        assert response.json()["status"] == "succeeded"
        assert wait_until(lambda: _covered(tmp_path), 30), log.read_text()[-3000:]
        print(f"checkpoint covered the action's events {time.monotonic() - submitted:.2f} s after submission")
        written = _checkpoints(tmp_path)
        heads = [c["last_event_id"] for c in written]
        assert heads == sorted(set(heads))  # one checkpoint per head, never the same head twice
        assert [c["seq"] for c in written] == list(range(1, len(written) + 1))
    finally:
        stop(server)

    verified = _verify(env, tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"covers {_events(tmp_path)} events" in verified.stdout

    with contextlib.closing(sqlite3.connect(tmp_path / ".outbox" / "outbox.db")) as connection, connection:
        connection.execute("DELETE FROM audit_events WHERE id = (SELECT max(id) FROM audit_events)")
    truncated = _verify(env, tmp_path)
    assert truncated.returncode == 1
    total = written[-1]["event_count"]
    assert f"the database has {total - 1}: event {total} is missing" in truncated.stderr
