"""Version skew made visible: each server reports its policy version; `policy status` compares."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydantic import SecretStr
from typer.testing import CliRunner

from outbox.api.app import create_app
from outbox.cli.main import app
from outbox.policy.engine import content_version
from outbox.runtime import Runtime
from tests.support.agents import bearer, make_agent
from tests.support.dispatchers import RecordingDispatcher

runner = CliRunner(env={"OUTBOX_ADMIN_TOKEN": None})
ADMIN_TOKEN = "admin-token-for-policy-status-0123456789"


class RunningServer:
    """The real app under a real uvicorn, in a thread, on a free port."""

    def __init__(self, runtime: Runtime) -> None:
        config = uvicorn.Config(create_app(runtime=runtime), host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def two_servers(
    make_runtime: Callable[..., Runtime], policy_dir: Path, tmp_path: Path
) -> Iterator[tuple[Runtime, Runtime, Path, list[str]]]:
    second_dir = tmp_path / "second-policies"
    shutil.copytree(policy_dir, second_dir)
    first = make_runtime(RecordingDispatcher(), admin_token=SecretStr(ADMIN_TOKEN))
    second = make_runtime(RecordingDispatcher(), policy_dir=second_dir, admin_token=SecretStr(ADMIN_TOKEN))
    with RunningServer(first) as a, RunningServer(second) as b:
        yield first, second, second_dir, [a, b]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_servers_on_the_same_policy_agree_and_a_reload_on_one_shows_as_skew(
    two_servers: tuple[Runtime, Runtime, Path, list[str]],
) -> None:
    _first, second, second_dir, urls = two_servers
    args = ["policy", "status", "--server", urls[0], "--server", urls[1], "--token", ADMIN_TOKEN]
    agreed = runner.invoke(app, args)
    assert agreed.exit_code == 0, agreed.output
    version = content_version(second_dir)
    assert f"all reachable servers run {version}" in agreed.output
    assert runner.invoke(app, [*args, "--expect", version]).exit_code == 0

    (second_dir / "rules.csv").write_text((second_dir / "rules.csv").read_text() + "\n# reviewed\n")
    assert second.policy.reload()[0]
    skewed = runner.invoke(app, args)
    assert skewed.exit_code == 1
    assert "SKEW: servers run 2 policy versions" in skewed.output
    assert content_version(second_dir) in skewed.output


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_failed_reload_is_reported_next_to_the_version_still_running(
    two_servers: tuple[Runtime, Runtime, Path, list[str]],
) -> None:
    _first, second, second_dir, urls = two_servers
    (second_dir / "rules.csv").write_text("p, broken\n")
    assert not second.policy.reload()[0]
    result = runner.invoke(
        app, ["policy", "status", "--server", urls[0], "--server", urls[1]], env={"OUTBOX_ADMIN_TOKEN": ADMIN_TOKEN}
    )
    assert result.exit_code == 0, result.output  # both still run the same (previous) version
    assert "last reload failed: rules.csv:1" in result.output


def test_an_unreachable_server_is_not_silently_ignored() -> None:
    result = runner.invoke(app, ["policy", "status", "--server", "http://127.0.0.1:9", "--timeout", "1"])
    assert result.exit_code == 2
    assert "1 server(s) unreachable" in result.output


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_policy_endpoint_reports_version_load_time_and_index(runtime: Runtime) -> None:
    key = make_agent(runtime.db, "policy-reader", ["http-reader"])
    with TestClient(create_app(runtime=runtime)) as client:
        body = client.get("/v1/policy", headers=bearer(key)).json()
    info = runtime.policy.info()
    assert body["version"] == info.version == content_version(runtime.settings.policy_dir)
    assert body["loaded_at"] == info.loaded_at.isoformat()
    assert body["indexed"] is True
    assert body["last_reload_error"] is None
