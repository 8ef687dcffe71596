"""tools/call goes through the one submission service: allowed, denied, invalid, unavailable."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import mcp_types as types
from sqlmodel import select

from outbox.audit.models import AuditEvent
from outbox.mcp.schemas import ACTION_ID_META, ON_BEHALF_OF_META, REASON_META, REPLAYED_META
from tests.mcp.conftest import RunningOutbox, mcp_client, text_of
from tests.support.calls import load
from tests.support.http_target import TargetServer


def call(
    outbox: RunningOutbox,
    key: str,
    name: str,
    arguments: dict[str, Any],
    meta: dict[str, Any] | None = None,
    mode: str = "auto",
) -> types.CallToolResult:
    async def scenario() -> types.CallToolResult:
        async with mcp_client(outbox.mcp_url, key, mode=mode) as client:
            return await client.call_tool(name, arguments, meta=meta)  # type: ignore[arg-type]

    return asyncio.run(scenario())


def test_an_allowed_call_runs_and_answers_with_the_action_it_recorded(
    outbox: RunningOutbox, target_server: TargetServer
) -> None:
    key = outbox.agent("writer", "http-writer")
    url = f"{target_server.base_url}/orders"
    meta = {ON_BEHALF_OF_META: "ada@example.com", REASON_META: "the customer asked for it"}

    result = call(outbox, key, "http__request", {"method": "POST", "url": url, "json": {"sku": "A1"}}, meta)

    assert result.is_error is False
    action = result.structured_content
    assert action is not None
    assert action["status"] == "succeeded"
    assert action["tool"] == "http.request"
    assert action["on_behalf_of"] == "user:ada@example.com"
    assert action["reason"] == "the customer asked for it"
    assert action["result"]["response"]["status"] == 200
    assert result.meta is not None
    assert result.meta[ACTION_ID_META] == action["id"]
    assert result.meta[REPLAYED_META] is False
    assert "http.request succeeded" in text_of(result)
    [received] = target_server.received("/orders")
    assert received.body == b'{"sku":"A1"}'

    # Recorded as received over MCP: the JSON-RPC message itself, never the credential.
    row = load(outbox.runtime, action["id"])
    assert row.request["face"] == "mcp"
    assert row.request["method"] == "tools/call"
    assert row.request["protocol_version"] == "2026-07-28"
    assert '"http__request"' in row.request["body"] and '"sku"' in row.request["body"]
    assert row.request["headers"]["mcp-method"] == "tools/call"
    assert "authorization" not in row.request["headers"]
    assert key not in str(row.request)
    assert row.request["idempotency"]["source"] == "derived"
    with outbox.runtime.db.session() as session:
        received_event = session.exec(
            select(AuditEvent).where(AuditEvent.action_id == action["id"], AuditEvent.event_type == "action.received")
        ).one()
    assert json.loads(received_event.data_json)["request"]["face"] == "mcp"


def test_a_denied_call_is_a_tool_error_naming_the_rule_and_the_hint(
    outbox: RunningOutbox, target_server: TargetServer
) -> None:
    key = outbox.agent("reader", "http-reader")

    result = call(outbox, key, "http__request", {"method": "GET", "url": f"{target_server.base_url}/admin/users"})

    assert result.is_error is True
    text = text_of(result)
    assert "Denied by policy" in text
    assert "p, role:http-reader, http:127.0.0.1:*/admin/**, get|head|post|put|patch|delete, deny" in text
    assert "Hint: This call is denied by policy. Do not retry it unchanged" in text
    # The denial is a recorded action: it is the structured content, with its problem document.
    assert result.structured_content is not None
    assert result.structured_content["status"] == "denied"
    assert result.structured_content["problem"]["hint"] in text
    assert target_server.received() == []


def test_invalid_arguments_are_a_tool_error_listing_each_field(outbox: RunningOutbox) -> None:
    key = outbox.agent("writer", "http-writer")

    result = call(outbox, key, "http__request", {"method": "FETCH"})

    assert result.is_error is True
    assert result.structured_content is None
    text = text_of(result)
    assert "- args.method:" in text
    assert "- args.url:" in text
    assert "Hint:" in text


def test_an_unknown_tool_is_a_tool_error_naming_the_tools_there_are(outbox: RunningOutbox) -> None:
    key = outbox.agent("writer", "http-writer")

    result = call(outbox, key, "email__sendd", {})

    assert result.is_error is True
    assert "unknown tool 'email__sendd'" in text_of(result)


def test_a_tool_that_cannot_run_here_is_a_tool_error_naming_what_is_missing(outbox: RunningOutbox) -> None:
    key = outbox.agent("operator", "k8s-operator")

    result = call(outbox, key, "k8s__get_pods", {"cluster": "staging", "namespace": "web"})

    assert result.is_error is True
    text = text_of(result)
    assert "cannot run on this server now" in text
    assert "kubeconfig" in text
    assert result.meta is not None and result.meta["dev.agent-outbox/retry_after_seconds"] == 60


def test_a_meta_value_that_is_not_a_string_is_a_tool_error(outbox: RunningOutbox) -> None:
    key = outbox.agent("writer", "http-writer")

    result = call(outbox, key, "http__request", {"method": "GET", "url": "http://127.0.0.1:9/"}, {ON_BEHALF_OF_META: 7})

    assert result.is_error is True
    assert f"- _meta.{ON_BEHALF_OF_META}: must be a string" in text_of(result)


def test_the_dotted_name_is_accepted_too(outbox: RunningOutbox, target_server: TargetServer) -> None:
    key = outbox.agent("writer", "http-writer")

    result = call(outbox, key, "http.request", {"method": "PUT", "url": f"{target_server.base_url}/dotted"})

    assert result.structured_content is not None and result.structured_content["status"] == "succeeded"
    assert len(target_server.received("/dotted")) == 1


def test_a_call_that_failed_is_a_tool_error_with_the_response(
    outbox: RunningOutbox, target_server: TargetServer
) -> None:
    key = outbox.agent("writer", "http-writer")

    result = call(outbox, key, "http__request", {"method": "POST", "url": f"{target_server.base_url}/status/404"})

    assert result.is_error is True
    assert result.structured_content is not None
    assert result.structured_content["status"] == "failed"
    assert result.structured_content["result"]["response"]["status"] == 404
    assert "http.request failed" in text_of(result)
    assert '"status": 404' in text_of(result)
