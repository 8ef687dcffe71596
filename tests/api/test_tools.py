"""`GET /v1/tools` lists the tools the calling agent may call, marks the ones that cannot run on
this server, and `/readyz` reports those as degraded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from outbox.actions.schemas import ActionOut
from outbox.api.app import create_app
from outbox.runtime import Runtime
from outbox.tools.http_request import provide_http_tools
from tests.support.agents import bearer, make_agent

RuntimeFactory = Callable[..., Runtime]


def tools_of(client: TestClient, key: str, query: str = "") -> dict[str, dict[str, Any]]:
    response = client.get(f"/v1/tools{query}", headers=bearer(key))
    assert response.status_code == 200, response.text
    return {tool["name"]: tool for tool in response.json()["tools"]}


@pytest.fixture
def serve(make_runtime: RuntimeFactory) -> Iterator[Callable[..., tuple[TestClient, Runtime]]]:
    """A client of an app whose runtime is built with these settings overrides, and the runtime."""
    clients: list[TestClient] = []

    def build(**overrides: object) -> tuple[TestClient, Runtime]:
        runtime = make_runtime(**overrides)
        client = TestClient(create_app(runtime=runtime), raise_server_exceptions=False)
        clients.append(client.__enter__())
        return client, runtime

    yield build
    for client in clients:
        client.__exit__(None, None, None)


KUBECONFIG = {"kubeconfig": SecretStr("apiVersion: v1\n")}
BWRAP_MISSING = "bubblewrap (bwrap) is not installed or not executable"


def test_an_http_reader_sees_only_what_it_may_call(client: TestClient, reader_key: str) -> None:
    tools = tools_of(client, reader_key)

    assert list(tools) == ["http.request"]
    http = tools["http.request"]
    assert http["function_name"] == "http__request"
    assert http["parameters"]["type"] == "object"
    assert http["callable"] is True
    assert http["not_callable_reason"] is None
    assert http["available"] is True
    assert http["unavailable_reason"] is None


def test_each_tool_has_the_schema_of_the_action_it_answers_with(client: TestClient, reader_key: str) -> None:
    (http,) = tools_of(client, reader_key).values()

    assert http["output_schema"] == ActionOut.model_json_schema()
    assert {"id", "status", "tool"} <= set(http["output_schema"]["properties"])


def test_all_lists_the_whole_catalogue_and_marks_what_the_agent_may_not_call(
    client: TestClient, runtime: Runtime, reader_key: str
) -> None:
    tools = tools_of(client, reader_key, "?all=true")

    assert list(tools) == sorted(runtime.policy.current.tools)
    assert tools["http.request"]["callable"] is True
    apply = tools["terraform.apply"]
    assert apply["callable"] is False
    assert apply["not_callable_reason"] == (
        "no rule allows it, or asks a human to approve it, for you (agent:reader-bot) or your roles (role:http-reader)"
    )
    assert apply["parameters"]["properties"]["stack"]["enum"] == ["network", "dns", "app"]


def test_a_role_sees_its_tools_including_those_it_may_only_ask_approval_for(
    client: TestClient, runtime: Runtime
) -> None:
    key = make_agent(runtime.db, "infra-bot", ["terraform-operator"])

    assert list(tools_of(client, key)) == ["terraform.apply", "terraform.plan"]


def test_a_tool_that_cannot_run_here_is_listed_unavailable_with_the_reason(
    serve: Callable[..., tuple[TestClient, Runtime]], tmp_path: Path
) -> None:
    client, runtime = serve(sandbox_bwrap_path=tmp_path / "no-bwrap", sandbox_secrets=KUBECONFIG)
    key = make_agent(runtime.db, "k8s-bot", ["k8s-operator"])

    tools = tools_of(client, key)

    assert list(tools) == ["k8s.delete_namespace", "k8s.delete_namespaces", "k8s.get_pods", "k8s.scale_deployment"]
    for tool in tools.values():
        assert tool["callable"] is True
        assert tool["available"] is False
        assert BWRAP_MISSING in tool["unavailable_reason"]


def test_a_missing_secret_is_named(client: TestClient, runtime: Runtime) -> None:
    key = make_agent(runtime.db, "k8s-bot", ["k8s-operator"])

    get_pods = tools_of(client, key)["k8s.get_pods"]

    assert get_pods["available"] is False
    assert "secret 'kubeconfig' is not configured on this server" in get_pods["unavailable_reason"]


def test_a_tool_with_everything_it_needs_is_available(
    serve: Callable[..., tuple[TestClient, Runtime]], tmp_path: Path
) -> None:
    """Development without bubblewrap (allowed unsandboxed runs) and the `repo` directory named."""
    repo = tmp_path / "repo"
    repo.mkdir()
    client, runtime = serve(sandbox_repo_dir=repo, allow_unsandboxed=True, sandbox_bwrap_path=tmp_path / "no-bwrap")
    key = make_agent(runtime.db, "repo-bot", ["repo-reader"])

    tools = tools_of(client, key)

    assert list(tools) == ["fs.list_directory", "git.log"]
    assert all(tool["available"] and tool["unavailable_reason"] is None for tool in tools.values())


def test_readyz_reports_unavailable_tools_as_degraded_and_stays_ready(
    serve: Callable[..., tuple[TestClient, Runtime]], tmp_path: Path
) -> None:
    client, _ = serve(sandbox_bwrap_path=tmp_path / "no-bwrap", sandbox_secrets=KUBECONFIG)

    ready = client.get("/readyz")

    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"] == "ok"
    degraded = {entry["tool"]: entry["unavailable_reason"] for entry in body["checks"]["tools"]}
    assert set(degraded) >= {"k8s.get_pods", "k8s.delete_namespace", "terraform.plan", "fs.list_directory"}
    assert BWRAP_MISSING in degraded["k8s.get_pods"]
    assert "http.request" not in degraded


def test_readyz_is_ready_when_every_tool_can_run(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(providers=(provide_http_tools,))
    with TestClient(create_app(runtime=runtime)) as client:
        ready = client.get("/readyz")

    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["checks"]["tools"] == []
