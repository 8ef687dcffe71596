"""The tool catalogue as an agent sees it: one function behind `GET /v1/tools` and MCP `tools/list`.

For the calling agent, each tool it may call at all under the running policy
(`outbox.policy.reachability`), or with `include_all` every tool, marked. Each entry also says
whether the tool can run on this server now (`ChecksAvailability`): a tool the agent may call but
that cannot run here is still listed, marked unavailable with the reason, because the agent (and
its operator) should learn that the tool exists and what is missing, rather than not find it.

The output schema is handed in by the edge that answers: it describes that edge's representation
of the submitted action (the HTTP API's and the MCP face's), which the tools layer does not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from outbox.policy.matching import Subject
from outbox.policy.reachability import tool_reachability
from outbox.policy.store import ActivePolicy
from outbox.toolkit.base import ChecksAvailability, Tool
from outbox.toolkit.registry import function_name


@dataclass(frozen=True, slots=True)
class ToolListing:
    """One tool, shaped as a function-calling definition, with what the agent needs to know of it."""

    name: str
    # The same tool spelled with `__` for model APIs that refuse dots; submissions accept both.
    function_name: str
    description: str
    # JSON Schema of the arguments.
    parameters: dict[str, Any]
    # JSON Schema of what a call answers with.
    output_schema: Mapping[str, Any]
    # Whether policy can allow this agent (or ask a human to approve) some call of this tool.
    callable: bool
    # Why not, when it cannot (only listed with `include_all`).
    not_callable_reason: str | None
    # Whether the tool can run on this server now; calls to an unavailable tool are refused (503).
    available: bool
    unavailable_reason: str | None


def tool_listing(
    active: ActivePolicy, subject: Subject, *, output_schema: Mapping[str, Any], include_all: bool = False
) -> list[ToolListing]:
    """The tools `subject` may call at all (all of them with `include_all`), in name order."""
    reachability = tool_reachability(active.snapshot, subject, active.tools)
    listing: list[ToolListing] = []
    for name, reach in reachability.items():
        if not reach.callable and not include_all:
            continue
        tool = active.tools[name]
        unavailable = unavailable_reason(tool)
        listing.append(
            ToolListing(
                name=name,
                function_name=function_name(name),
                description=tool.description,
                parameters=tool.args_schema(),
                output_schema=output_schema,
                callable=reach.callable,
                not_callable_reason=reach.reason,
                available=unavailable is None,
                unavailable_reason=unavailable,
            )
        )
    return listing


def unavailable_reason(tool: Tool) -> str | None:
    """Why `tool` cannot run on this server now; None when it can or cannot tell."""
    return tool.unavailable_reason() if isinstance(tool, ChecksAvailability) else None


def unavailable_tools(tools: Mapping[str, Tool]) -> dict[str, str]:
    """Every tool that cannot run here now, with the reason, in name order (`/readyz`)."""
    return {name: reason for name in sorted(tools) if (reason := unavailable_reason(tools[name])) is not None}
