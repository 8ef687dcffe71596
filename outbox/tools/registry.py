"""Which tools exist: built from the policy directory, reloaded with it.

Each provider reads its own part of the policy directory (http hosts, mail config, command tool
definitions) and returns the tools it contributes. A provider that fails makes the whole load
fail, so a reload keeps the previous, complete set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from outbox.config import Settings
from outbox.db import Database
from outbox.tools.base import Tool


@dataclass(frozen=True)
class ToolServices:
    """What tools may use at execution time."""

    settings: Settings
    db: Database


ToolProvider = Callable[[Path, ToolServices], list[Tool]]


def _providers() -> list[ToolProvider]:
    from outbox.tools.http_request import provide_http_tools

    return [provide_http_tools]


def load_tools(policy_dir: Path, services: ToolServices) -> Mapping[str, Tool]:
    tools: dict[str, Tool] = {}
    for provider in _providers():
        for tool in provider(policy_dir, services):
            if tool.name in tools:
                raise ValueError(f"tool {tool.name!r} is defined twice")
            tools[str(tool.name)] = tool
    return dict(sorted(tools.items()))
