"""A profile that fails its isolation probe: its tools are unavailable in `/v1/tools` and
`/readyz`, with the failed claim named (real bubblewrap, behind a wrapper that drops `--seccomp`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from outbox.api.app import create_app
from outbox.runtime import Runtime
from tests.commands.broken_bwrap import broken_bwrap
from tests.support.agents import bearer, make_agent
from tests.support.sandbox_dirs import sandbox_readable_dir


@pytest.fixture
def readable_dir() -> Iterator[Path]:
    """A repository the sandbox's host uid can read (pytest's tmp_path is 0700)."""
    with sandbox_readable_dir("outbox-probe-api-") as path:
        yield path


@pytest.fixture
def serve(
    make_runtime: Callable[..., Runtime], readable_dir: Path
) -> Iterator[Callable[..., tuple[TestClient, Runtime]]]:
    clients: list[TestClient] = []

    def start(**sandbox: object) -> tuple[TestClient, Runtime]:
        runtime = make_runtime(sandbox_repo_dir=readable_dir, allow_unsandboxed=False, **sandbox)
        client = TestClient(create_app(runtime=runtime), raise_server_exceptions=False).__enter__()
        clients.append(client)
        return client, runtime

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def test_tools_of_a_profile_failing_its_probe_are_unavailable_in_v1_tools_and_readyz(
    serve: Callable[..., tuple[TestClient, Runtime]], readable_dir: Path
) -> None:
    client, runtime = serve(sandbox_bwrap_path=broken_bwrap(readable_dir, "drop-seccomp"))
    key = make_agent(runtime.db, "repo-bot", ["repo-reader"])

    listed = {tool["name"]: tool for tool in client.get("/v1/tools", headers=bearer(key)).json()["tools"]}
    ready = client.get("/readyz").json()

    assert listed["fs.list_directory"]["available"] is False
    assert "seccomp filter active" in listed["fs.list_directory"]["unavailable_reason"]
    degraded = {entry["tool"]: entry["unavailable_reason"] for entry in ready["checks"]["tools"]}
    assert ready["status"] == "degraded"
    assert "seccomp filter active" in degraded["fs.list_directory"]
