"""tools/call: one MCP call becomes one submission through the agent contract's service.

The tool's arguments are `args`, the outbox's `_meta` fields (schemas.py) the rest of the
envelope, and the whole goes through exactly what POST /v1/actions calls: `parse_envelope`, then
`service.submit` (authentication happened per HTTP request, in auth.py; validation, policy,
approvals, budgets, the audit events and the recorded request all happen in the service). The
answer waits as HTTP's `Prefer: wait` does (`outbox.actions.waiting`), except that a call needing
a human is answered at once, pending: a person decides in minutes, not within a tool call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import mcp_types as types

from outbox.actions import service, waiting
from outbox.actions.models import ActionStatus
from outbox.errors import DomainError
from outbox.idempotency.service import validate_key
from outbox.mcp import keys, tasks
from outbox.mcp.results import call_result, refusal_result
from outbox.mcp.schemas import CallMeta
from outbox.toolkit.registry import find_tool

if TYPE_CHECKING:
    from outbox.agents.service import AuthenticatedAgent
    from outbox.runtime import Runtime


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tools/call as received: the params, and the request record the transport built."""

    name: str
    arguments: dict[str, Any] | None
    meta: Mapping[str, Any] | None
    record: dict[str, Any]


async def call_tool(
    runtime: Runtime, agent: AuthenticatedAgent, call: ToolCall
) -> types.CallToolResult | dict[str, Any]:
    """Submit, wait up to `mcp_call_wait_seconds` for the action to settle, answer: the tool
    result, or (for a client that takes tasks, while the action can still change) a task."""
    try:
        fields = CallMeta.of(call.meta)
        client_key = validate_key(fields.idempotency_key) if fields.idempotency_key is not None else None
        envelope = service.parse_envelope(
            {"tool": _tool_name(runtime, call.name), "args": call.arguments or {}, **fields.envelope_fields()}
        )
        submitted = await anyio.to_thread.run_sync(keys.submit, runtime, agent, envelope, client_key, call.record)
    except DomainError as refusal:
        return refusal_result(refusal)
    answer = await waiting.wait_until_settled(
        runtime, agent, submitted.answer, runtime.settings.mcp_call_wait_seconds, hold_for_human=False
    )
    pending = answer.action is not None and not ActionStatus(answer.action["status"]).is_terminal
    if pending and tasks.client_accepts_tasks(call.meta):
        return tasks.created_task(answer)
    return call_result(answer)


def _tool_name(runtime: Runtime, requested: str) -> str:
    """The outbox's name of the tool called: tools/list offers the function name (`http__request`),
    and the action, its fingerprint and its audit record use the one name (`http.request`), as
    POST /v1/actions does. An unknown name goes on as sent, and the service says what exists."""
    tool = find_tool(runtime.policy.current.tools, requested)
    return tool.name if tool is not None else requested
