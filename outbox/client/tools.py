"""The outbox's tools in the shapes model APIs take, and a model's tool call read back.

Which name each format uses, and why:

- OpenAI (chat completions `tools`) and Anthropic (Messages `tools`) names must match
  `^[a-zA-Z0-9_-]{1,64}$`, which refuses the dot in `http.request`: they get `function_name`
  (`http__request`). The outbox accepts that spelling in `POST /v1/actions`, so the name the model
  calls is submitted back unchanged.
- MCP tool names may contain dots (and the outbox's own MCP face lists tools under their
  canonical names): MCP gets `name` (`http.request`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from outbox.client.models import ToolDefinition

__all__ = ["ToolFormat", "as_anthropic", "as_mcp", "as_openai", "convert", "read_tool_call"]

ToolFormat = Literal["openai", "anthropic", "mcp"]


def _object_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Both APIs take only an object schema at the top; a tool without arguments gets an empty one."""
    result = dict(schema)
    result.setdefault("type", "object")
    if result["type"] == "object":
        result.setdefault("properties", {})
    return result


def as_openai(tool: ToolDefinition) -> dict[str, Any]:
    """`{"type": "function", "function": {"name", "description", "parameters"}}` (chat completions)."""
    return {
        "type": "function",
        "function": {
            "name": tool.function_name,
            "description": tool.description,
            "parameters": _object_schema(tool.parameters),
        },
    }


def as_anthropic(tool: ToolDefinition) -> dict[str, Any]:
    """`{"name", "description", "input_schema"}` (Anthropic Messages API)."""
    return {
        "name": tool.function_name,
        "description": tool.description,
        "input_schema": _object_schema(tool.parameters),
    }


def as_mcp(tool: ToolDefinition) -> dict[str, Any]:
    """MCP `Tool`: `{"name", "description", "inputSchema", "outputSchema"?}`."""
    definition: dict[str, Any] = {
        "name": tool.name,
        "description": tool.description,
        "inputSchema": _object_schema(tool.parameters),
    }
    if tool.output_schema is not None:
        definition["outputSchema"] = _object_schema(tool.output_schema)
    return definition


_CONVERTERS = {"openai": as_openai, "anthropic": as_anthropic, "mcp": as_mcp}


def convert(tools: Iterable[ToolDefinition], format: ToolFormat) -> list[dict[str, Any]]:
    try:
        converter = _CONVERTERS[format]
    except KeyError:
        raise ValueError(f"unknown tool format {format!r}: use one of {', '.join(_CONVERTERS)}") from None
    return [converter(tool) for tool in tools]


def read_tool_call(call: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """`(name, arguments)` of a tool call as a model API returned it, as plain dicts:

    - OpenAI chat completions: `{"type": "function", "function": {"name", "arguments": "<JSON>"}}`;
    - Anthropic Messages: a `{"type": "tool_use", "name", "input": {...}}` content block;
    - MCP `tools/call` params: `{"name", "arguments": {...}}`.

    The name goes to the outbox as it is: it accepts both `http.request` and `http__request`.
    """
    if isinstance(call.get("function"), Mapping):
        name, arguments = call["function"].get("name"), call["function"].get("arguments")
    elif "input" in call:
        name, arguments = call.get("name"), call["input"]
    else:
        name, arguments = call.get("name"), call.get("arguments")
    if isinstance(arguments, str):
        # OpenAI sends the arguments as a JSON string the model wrote; it may not be valid JSON.
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"the tool call's arguments are not valid JSON: {exc}") from exc
    if not isinstance(name, str) or not name:
        raise ValueError("the tool call has no name")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise ValueError("the tool call's arguments must be a JSON object")
    return name, arguments
