"""The tools the twin offers (GET /v1/tools, MCP tools/list): with `--policy DIR`, that
directory's listing for the recorded agent, as the live service lists it; without, the recorded
tools, whose schemas a recording does not hold (any object is accepted)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from outbox.replay.twin import Twin
from outbox.toolkit.registry import function_name
from outbox.tools.listing import ToolListing, tool_listing

RECORDED_TOOL_DESCRIPTION: Final = (
    "A tool of the recording this replay twin serves. Calls are answered from the recording: nothing is executed."
)


def tool_entries(twin: Twin, *, output_schema: Mapping[str, Any]) -> list[ToolListing]:
    if twin.catalogue is not None:
        return tool_listing(twin.catalogue, twin.subject, output_schema=output_schema)
    return [
        ToolListing(
            name=name,
            function_name=function_name(name),
            description=RECORDED_TOOL_DESCRIPTION,
            parameters={"type": "object"},
            output_schema=output_schema,
            callable=True,
            not_callable_reason=None,
            available=True,
            unavailable_reason=None,
        )
        for name in twin.tools
    ]
