"""Which tools exist: built from the policy directory, reloaded with it.

The providers are handed in by the composition root (`Runtime.build`, see
`outbox/tools/providers.py` for the built-in ones), so this module knows no tool. Each provider
reads its own part of the policy directory (http hosts, mail config, command tool definitions)
and returns the tools it contributes. A provider that fails makes the whole load fail, so a
reload keeps the previous, complete set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from outbox.config import Settings
from outbox.db import Database
from outbox.problems import pydantic_errors
from outbox.toolkit.base import Tool, ToolArgumentsError


@dataclass(frozen=True)
class ToolServices:
    """What tools may use at execution time."""

    settings: Settings
    db: Database


ToolProvider = Callable[[Path, ToolServices], Sequence[Tool]]


def load_tools(policy_dir: Path, services: ToolServices, providers: Sequence[ToolProvider]) -> Mapping[str, Tool]:
    tools: dict[str, Tool] = {}
    for provider in providers:
        for tool in provider(policy_dir, services):
            if tool.name in tools:
                raise ValueError(f"tool {tool.name!r} is defined twice")
            tools[str(tool.name)] = tool
    return dict(sorted(tools.items()))


def function_name(tool_name: str) -> str:
    """The tool's name as function-calling APIs accept it (`[A-Za-z0-9_-]`): dots become `__`."""
    return tool_name.replace(".", "__")


def find_tool(tools: Mapping[str, Tool], requested: str) -> Tool | None:
    """A tool by its name or by its function name."""
    tool = tools.get(requested)
    if tool is None and "__" in requested:
        tool = tools.get(requested.replace("__", "."))
    return tool


def parse_in(tools: Mapping[str, Tool], name: str, raw_args: Mapping[str, Any]) -> tuple[Tool, BaseModel] | str:
    """The call as another policy version's tools would take it: the tool and its parsed
    arguments, or why that version would refuse the call (what its 422 would say, in short).
    `outbox policy test` cases, `outbox policy replay` and the shadow policy all ask this."""
    tool = find_tool(tools, name)
    if tool is None:
        return f"unknown tool {name!r} (tools: {', '.join(tools) or 'none'})"
    try:
        return tool, tool.parse_args(dict(raw_args))
    except ValidationError as exc:
        problems = [f"{p['field']}: {p['message']}" for p in pydantic_errors(exc.errors())]
    except ToolArgumentsError as exc:
        problems = [f"{p.field}: {p.message}" for p in exc.problems]
    return f"{name} refuses the arguments: {'; '.join(problems)}"
