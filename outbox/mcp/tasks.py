"""Calls that wait for a human, as tasks (the `io.modelcontextprotocol/tasks` extension, SEP-2663).

The SDK (mcp 2.3.0) does not implement this extension: it keeps the 2025-11-25 task types for
reference only and serves no `tasks/*` method. It does let a server register methods of its
own and answer `tools/call` with an extension's result shape (`resultType: "task"`) on the
2026-07-28 wire, and that is all the extension needs, so it is implemented here.

A task is the action: its id is the action id (122 random bits), its state is read from the
database on every `tasks/get` (so any replica answers, and a restart loses nothing), and it lives
as long as the action does (`ttlMs: null`). Only a client that declares the extension in the
request's capabilities gets a task; `tasks/*` checks the agent owns the action, as
GET /v1/actions/{id} does. There is no `input_required`: the input a pending call waits for is a
human's decision, made in Slack, the console or the CLI, not by the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio.to_thread
from mcp.shared.exceptions import MCPError
from mcp_types import CLIENT_CAPABILITIES_META_KEY, INVALID_PARAMS, MISSING_REQUIRED_CLIENT_CAPABILITY

from outbox.actions import service
from outbox.actions.models import ActionStatus
from outbox.errors import ActionNotCancellable, ActionNotFound
from outbox.mcp.results import call_result
from outbox.mcp.schemas import TASKS_EXTENSION

if TYPE_CHECKING:
    from outbox.agents.service import AuthenticatedAgent
    from outbox.runtime import Runtime

# A human decides in minutes, a send window opens in hours: every two seconds is often enough.
POLL_INTERVAL_MS: Final = 2000


def client_accepts_tasks(meta: Mapping[str, Any] | None) -> bool:
    """Whether this request's client declared the extension (2026-07-28 per-request capabilities)."""
    capabilities = (meta or {}).get(CLIENT_CAPABILITIES_META_KEY)
    extensions = capabilities.get("extensions") if isinstance(capabilities, Mapping) else None
    return isinstance(extensions, Mapping) and TASKS_EXTENSION in extensions


def task_of(answer: service.Answer) -> dict[str, Any]:
    """The task for an action (`DetailedTask`): working while the action can still change, then
    completed with the tools/call result it ended with (an `isError` one included), or cancelled."""
    action = answer.action
    assert action is not None
    status = ActionStatus(action["status"])
    task: dict[str, Any] = {
        "taskId": action["id"],
        "createdAt": action["created_at"],
        "lastUpdatedAt": action["updated_at"],
        "ttlMs": None,
        "pollIntervalMs": POLL_INTERVAL_MS,
    }
    if status is ActionStatus.CANCELLED:
        return {**task, "status": "cancelled", "statusMessage": "The action was cancelled before it ran."}
    if status.is_terminal:
        result = call_result(answer).model_dump(by_alias=True, mode="json", exclude_none=True)
        return {**task, "status": "completed", "statusMessage": f"The action {status.value}.", "result": result}
    return {**task, "status": "working", "statusMessage": _waiting_for(action, status)}


def _waiting_for(action: dict[str, Any], status: ActionStatus) -> str:
    if status is ActionStatus.AWAITING_APPROVAL:
        return f"Waiting for a human to approve {action['tool']}; nothing has run yet."
    if status is ActionStatus.DEFERRED:
        return f"Deferred until {action.get('not_before')}: {action.get('status_reason') or 'send window or budget'}."
    return f"The action is {status.value}."


def created_task(answer: service.Answer) -> dict[str, Any]:
    """A `CreateTaskResult`: a tools/call answered with a task instead of a `CallToolResult`.
    The action is committed before this is answered, so `tasks/get` resolves it at once."""
    return {"resultType": "task", **task_of(answer)}


def _require_extension(meta: Mapping[str, Any] | None) -> None:
    if not client_accepts_tasks(meta):
        raise MCPError(
            MISSING_REQUIRED_CLIENT_CAPABILITY,
            "Missing required client capability",
            {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}},
        )


def _not_found(task_id: str) -> MCPError:
    return MCPError(INVALID_PARAMS, f"Failed to retrieve task: Task not found ({task_id!r} is no action of yours)")


async def get_task(
    runtime: Runtime, agent: AuthenticatedAgent, task_id: str, meta: Mapping[str, Any] | None
) -> dict[str, Any]:
    """tasks/get: the action as it is now, as a task."""
    _require_extension(meta)
    try:
        answer = await anyio.to_thread.run_sync(service.current_answer, runtime, agent, task_id)
    except ActionNotFound:
        raise _not_found(task_id) from None
    return task_of(answer)


async def cancel_task(
    runtime: Runtime, agent: AuthenticatedAgent, task_id: str, meta: Mapping[str, Any] | None
) -> dict[str, Any]:
    """tasks/cancel: cancel the action if it has not started (queued, deferred, awaiting
    approval); one that is running or finished goes on to its own end, as the extension allows."""
    _require_extension(meta)
    try:
        await anyio.to_thread.run_sync(service.cancel_action, runtime, agent, task_id)
    except ActionNotFound:
        raise _not_found(task_id) from None
    except ActionNotCancellable:
        pass
    return {}


async def update_task(
    runtime: Runtime, agent: AuthenticatedAgent, task_id: str, meta: Mapping[str, Any] | None
) -> dict[str, Any]:
    """tasks/update: acknowledged; no task here ever asks the client for input to answer."""
    await get_task(runtime, agent, task_id, meta)
    return {}
