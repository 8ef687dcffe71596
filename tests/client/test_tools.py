"""Tool definitions in the shapes model APIs take, from a real server's `GET /v1/tools`, and a
model's tool call read back."""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
import pytest
from mcp.types import Tool as McpTool

from outbox.client import OutboxClient, read_tool_call
from tests.client.conftest import OutboxServer

pytestmark = pytest.mark.slow

# The name rule of OpenAI function tools and Anthropic tools.
MODEL_API_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def assert_object_schema(schema: dict[str, Any]) -> None:
    jsonschema_rs.meta.validate({"$schema": "https://json-schema.org/draft/2020-12/schema", **schema})
    assert schema["type"] == "object"
    assert isinstance(schema["properties"], dict)


def test_openai_anthropic_and_mcp_shapes_for_a_real_servers_tools(outbox_server: OutboxServer) -> None:
    key = outbox_server.agent("reader", "http-reader")
    with OutboxClient(outbox_server.url, key) as outbox:
        listed = outbox.tool_definitions()
        openai = outbox.tools("openai")
        anthropic = outbox.tools("anthropic")
        mcp = outbox.tools("mcp")

    assert [t.name for t in listed] == ["http.request"]  # what http-reader may call at all
    assert len(openai) == len(anthropic) == len(mcp) == len(listed)
    for definition, tool in zip(listed, openai, strict=True):
        assert set(tool) == {"type", "function"} and tool["type"] == "function"
        assert set(tool["function"]) == {"name", "description", "parameters"}
        assert MODEL_API_NAME.fullmatch(tool["function"]["name"])
        assert tool["function"]["name"] == definition.function_name
        assert tool["function"]["description"] == definition.description
        assert_object_schema(tool["function"]["parameters"])
    for definition, tool in zip(listed, anthropic, strict=True):
        assert set(tool) == {"name", "description", "input_schema"}
        assert MODEL_API_NAME.fullmatch(tool["name"])
        assert tool["name"] == definition.function_name
        assert_object_schema(tool["input_schema"])
    for definition, tool in zip(listed, mcp, strict=True):
        assert set(tool) <= {"name", "description", "inputSchema", "outputSchema"}
        assert tool["name"] == definition.name == "http.request"
        assert_object_schema(tool["inputSchema"])
        if "outputSchema" in tool:
            assert_object_schema(tool["outputSchema"])
        # The MCP SDK's own Tool type reads it back unchanged.
        assert McpTool.model_validate(tool).model_dump(by_alias=True, exclude_none=True) == tool


def test_all_tools_lists_the_whole_catalogue_with_the_uncallable_marked(outbox_server: OutboxServer) -> None:
    key = outbox_server.agent("reader", "http-reader")
    with OutboxClient(outbox_server.url, key) as outbox:
        callable_only = {t.name for t in outbox.tool_definitions()}
        everything = outbox.tool_definitions(all_tools=True)
        every_name = [t["function"]["name"] for t in outbox.tools("openai", all_tools=True)]

    assert callable_only < {t.name for t in everything}
    refused = [t for t in everything if t.name not in callable_only]
    assert all(t.is_callable is False and t.not_callable_reason for t in refused)
    assert "terraform.apply" in {t.name for t in refused}
    assert all(MODEL_API_NAME.fullmatch(name) for name in every_name)


def test_an_unknown_format_is_refused(outbox_server: OutboxServer) -> None:
    key = outbox_server.agent("reader", "http-reader")
    with OutboxClient(outbox_server.url, key) as outbox, pytest.raises(ValueError, match="openai, anthropic, mcp"):
        outbox.tools("gemini")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "call",
    [
        {"id": "call_1", "type": "function", "function": {"name": "http__request", "arguments": '{"url": "u"}'}},
        {"type": "tool_use", "id": "toolu_1", "name": "http__request", "input": {"url": "u"}},
        {"name": "http__request", "arguments": {"url": "u"}},
    ],
    ids=["openai", "anthropic", "mcp"],
)
def test_a_models_tool_call_is_read_in_each_shape(call: dict[str, Any]) -> None:
    assert read_tool_call(call) == ("http__request", {"url": "u"})


def test_a_tool_call_without_arguments_has_empty_ones_and_broken_arguments_are_refused() -> None:
    assert read_tool_call({"type": "function", "function": {"name": "t", "arguments": ""}}) == ("t", {})
    with pytest.raises(ValueError, match="not valid JSON"):
        read_tool_call({"type": "function", "function": {"name": "t", "arguments": "{url: u"}})
    with pytest.raises(ValueError, match="JSON object"):
        read_tool_call({"name": "t", "arguments": [1, 2]})
    with pytest.raises(ValueError, match="no name"):
        read_tool_call({"arguments": {}})
