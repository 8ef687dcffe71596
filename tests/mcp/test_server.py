"""The MCP server at /mcp: which clients it serves, what tools/list shows, which requests it refuses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import mcp_types as types
import pytest

from outbox.actions.schemas import ActionOut
from outbox.mcp.schemas import TOOL_NAME_META, UNAVAILABLE_META
from tests.mcp.conftest import RunningOutbox, mcp_client
from tests.support.http_target import TargetServer

ACTION_SCHEMA = ActionOut.model_json_schema(mode="serialization")


def listed(outbox: RunningOutbox, key: str) -> list[types.Tool]:
    async def scenario() -> list[types.Tool]:
        async with mcp_client(outbox.mcp_url, key) as client:
            return (await client.list_tools()).tools

    return asyncio.run(scenario())


def test_tools_list_shows_each_agent_only_the_tools_its_roles_may_call(outbox: RunningOutbox) -> None:
    reader = listed(outbox, outbox.agent("reader", "http-reader"))
    operator = listed(outbox, outbox.agent("operator", "k8s-operator"))
    nobody = listed(outbox, outbox.agent("nobody"))

    assert [tool.name for tool in reader] == ["http__request"]
    assert [tool.name for tool in operator] == [
        "k8s__delete_namespace",
        "k8s__delete_namespaces",
        "k8s__get_pods",
        "k8s__scale_deployment",
    ]
    assert nobody == []
    [http] = reader
    # The MCP name is the function name; the outbox's own name is the title and in _meta.
    assert http.title == "http.request"
    assert http.meta is not None and http.meta[TOOL_NAME_META] == "http.request"
    assert http.input_schema["type"] == "object"
    assert {"method", "url"} <= set(http.input_schema["properties"])
    assert http.output_schema == ACTION_SCHEMA
    # The operator may call the k8s tools, but this server has no kubeconfig: listed, marked.
    for tool in operator:
        assert tool.meta is not None and "kubeconfig" in tool.meta[UNAVAILABLE_META]
        assert tool.description is not None and tool.description.startswith("UNAVAILABLE on this server now")


def test_a_2025_11_25_client_connects_with_the_initialize_handshake_and_calls_tools(
    outbox: RunningOutbox, target_server: TargetServer
) -> None:
    key = outbox.agent("writer", "http-writer")

    async def scenario() -> tuple[str, list[str], types.CallToolResult]:
        async with mcp_client(outbox.mcp_url, key, mode="legacy") as client:
            tools = await client.list_tools()
            result = await client.call_tool(
                "http__request", {"method": "POST", "url": f"{target_server.base_url}/legacy", "json": {"n": 1}}
            )
            return client.protocol_version, [t.name for t in tools.tools], result

    version, names, result = asyncio.run(scenario())

    assert version == "2025-11-25"
    assert names == ["http__request"]
    assert result.is_error is False
    assert result.structured_content is not None and result.structured_content["status"] == "succeeded"
    assert len(target_server.received("/legacy")) == 1


def test_a_2026_07_28_client_pinned_to_its_version_needs_no_handshake(outbox: RunningOutbox) -> None:
    key = outbox.agent("reader", "http-reader")

    async def scenario() -> tuple[str, list[str]]:
        async with mcp_client(outbox.mcp_url, key, mode="2026-07-28") as client:
            return client.protocol_version, [t.name for t in (await client.list_tools()).tools]

    assert asyncio.run(scenario()) == ("2026-07-28", ["http__request"])


def test_the_default_client_negotiates_2026_07_28_and_sees_the_tasks_extension(outbox: RunningOutbox) -> None:
    key = outbox.agent("reader", "http-reader")

    async def scenario() -> tuple[str, types.ServerCapabilities]:
        async with mcp_client(outbox.mcp_url, key) as client:
            return client.protocol_version, client.server_capabilities

    version, capabilities = asyncio.run(scenario())
    assert version == "2026-07-28"
    assert capabilities.tools is not None
    assert capabilities.extensions is not None and "io.modelcontextprotocol/tasks" in capabilities.extensions


def test_mcp_with_a_trailing_slash_is_the_same_endpoint_without_a_redirect(outbox: RunningOutbox) -> None:
    key = outbox.agent("reader", "http-reader")

    async def scenario() -> list[str]:
        async with mcp_client(outbox.mcp_url + "/", key) as client:
            return [t.name for t in (await client.list_tools()).tools]

    assert asyncio.run(scenario()) == ["http__request"]


def discover(outbox: RunningOutbox, headers: dict[str, str]) -> httpx.Response:
    """A raw 2026-07-28 `server/discover` POST, headers as given."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "server/discover",
        "params": {
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            }
        },
    }
    sent = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "server/discover",
        **headers,
    }
    return httpx.post(outbox.mcp_url, json=body, headers=sent, timeout=10)


def test_a_foreign_host_or_origin_is_refused_before_anything_else(outbox: RunningOutbox) -> None:
    key = outbox.agent("reader", "http-reader")
    bearer = {"Authorization": f"Bearer {key}"}

    assert discover(outbox, bearer).status_code == 200
    # DNS rebinding: a page on another site that resolved its name to this host.
    assert discover(outbox, {**bearer, "Host": "attacker.example"}).status_code == 421
    assert discover(outbox, {**bearer, "Origin": "http://attacker.example"}).status_code == 403
    # Without a key too: the Host check runs first, so no 401 names a URL built from that Host.
    refused = discover(outbox, {"Host": "attacker.example:80"})
    assert refused.status_code == 421
    assert "www-authenticate" not in refused.headers


def test_allowed_hosts_come_from_the_settings(make_outbox: Callable[..., RunningOutbox]) -> None:
    outbox = make_outbox(mcp_allowed_hosts=["outbox.internal:*"])
    key = outbox.agent("reader", "http-reader")
    bearer = {"Authorization": f"Bearer {key}"}

    assert discover(outbox, {**bearer, "Host": "outbox.internal:8000"}).status_code == 200
    assert discover(outbox, bearer).status_code == 421


def test_only_post_is_served_there_is_no_stream_or_session_to_open_or_delete(outbox: RunningOutbox) -> None:
    key = outbox.agent("reader", "http-reader")
    headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}

    for method in ("GET", "DELETE"):
        refused = httpx.request(method, outbox.mcp_url, headers=headers, timeout=10)
        assert refused.status_code == 405
        assert refused.headers["allow"] == "POST"


@pytest.mark.parametrize("version", ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"])
def test_every_handshake_era_version_is_negotiated_as_asked(outbox: RunningOutbox, version: str) -> None:
    key = outbox.agent("reader", "http-reader")
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "old", "version": "1"}},
    }
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json, text/event-stream"}

    answer = httpx.post(outbox.mcp_url, json=initialize, headers=headers, timeout=10)

    assert answer.status_code == 200
    data = next(line.removeprefix("data: ") for line in answer.text.splitlines() if line.startswith("data: "))
    result = json.loads(data)["result"]
    assert result["protocolVersion"] == version
    assert result["serverInfo"]["name"] == "agent-outbox"
    assert "tools" in result["capabilities"]


def test_tools_list_follows_a_policy_reload(outbox: RunningOutbox, policy_dir: Path) -> None:
    key = outbox.agent("reader", "http-reader")
    assert [tool.name for tool in listed(outbox, key)] == ["http__request"]

    with (policy_dir / "rules.csv").open("a", encoding="utf-8") as rules:
        rules.write("\np, role:http-reader, terraform:*, plan, allow\n")
    assert outbox.runtime.policy.reload()[0]

    assert [tool.name for tool in listed(outbox, key)] == ["http__request", "terraform__plan"]
