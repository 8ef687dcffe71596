"""A call that needs a human: answered at once, pending; followed as a task or with GET /v1/actions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
import yaml
from mcp import Client
from mcp.shared.exceptions import MCPError

from outbox.approvals.service import decide
from tests.mcp.conftest import CreatedTask, RunningOutbox, TasksExtension, TaskState, cancel_task, get_task, mcp_client
from tests.mcp.conftest import text_of as text
from tests.support.http_target import TargetServer

APPROVER = "user:oncall@example.com"


def delete(target_server: TargetServer, path: str) -> dict[str, Any]:
    # policies/rules.csv: an http-writer's DELETE needs a human.
    return {"method": "DELETE", "url": f"{target_server.base_url}{path}"}


async def created_task(client: Client, arguments: dict[str, Any]) -> CreatedTask:
    result = await client.session.call_tool("http__request", arguments, allow_claimed=True, allow_input_required=False)
    assert isinstance(result, CreatedTask), result
    return result


async def poll_until_done(client: Client, task_id: str) -> TaskState:
    deadline = time.monotonic() + 30
    while True:
        state = await get_task(client, task_id)
        if state.status != "working":
            return state
        assert time.monotonic() < deadline, f"task still working: {state.status_message}"
        await asyncio.sleep(0.1)


def test_a_call_awaiting_approval_is_a_task_the_client_polls_until_the_human_decides(
    outbox: RunningOutbox, target_server: TargetServer
) -> None:
    key = outbox.agent("writer", "http-writer")

    async def scenario() -> tuple[CreatedTask, TaskState, TaskState]:
        async with mcp_client(outbox.mcp_url, key, extensions=[TasksExtension()]) as client:
            task = await created_task(client, delete(target_server, "/orders/7"))
            pending = await get_task(client, task.task_id)
            await asyncio.to_thread(decide, outbox.runtime, task.task_id, APPROVER, "approve", via="api")
            done = await poll_until_done(client, task.task_id)
            return task, pending, done

    task, pending, done = asyncio.run(scenario())

    assert task.status == "working"
    assert task.task_id.startswith("act_")
    assert task.status_message is not None and "approve" in task.status_message
    assert pending.status == "working"
    assert pending.poll_interval_ms == 2000
    assert pending.ttl_ms is None
    assert done.status == "completed"
    assert done.result is not None
    result = types.CallToolResult.model_validate(done.result)
    assert result.is_error is False
    assert result.structured_content is not None
    assert result.structured_content["status"] == "succeeded"
    assert result.structured_content["id"] == task.task_id
    assert len(target_server.received("/orders/7")) == 1


def test_a_rejected_call_completes_its_task_with_a_tool_error_carrying_the_reason(
    outbox: RunningOutbox, target_server: TargetServer
) -> None:
    key = outbox.agent("writer", "http-writer")

    async def scenario() -> TaskState:
        async with mcp_client(outbox.mcp_url, key, extensions=[TasksExtension()]) as client:
            task = await created_task(client, delete(target_server, "/orders/8"))
            await asyncio.to_thread(
                decide, outbox.runtime, task.task_id, APPROVER, "deny", via="api", reason="order 8 is not refundable"
            )
            return await poll_until_done(client, task.task_id)

    done = asyncio.run(scenario())

    assert done.status == "completed"
    assert done.result is not None
    result = types.CallToolResult.model_validate(done.result)
    assert result.is_error is True
    assert "order 8 is not refundable" in text(result)
    assert target_server.received() == []


def test_without_the_tasks_extension_the_pending_action_is_answered_at_once_with_how_to_follow_it(
    outbox: RunningOutbox, target_server: TargetServer
) -> None:
    key = outbox.agent("writer", "http-writer")
    arguments = delete(target_server, "/orders/9")

    async def call() -> types.CallToolResult:
        async with mcp_client(outbox.mcp_url, key, mode="legacy") as client:
            return await client.call_tool("http__request", arguments)

    pending = asyncio.run(call())

    assert pending.is_error is False
    assert pending.structured_content is not None
    action_id = pending.structured_content["id"]
    assert pending.structured_content["status"] == "awaiting_approval"
    assert "waiting for a human to approve" in text(pending)
    assert f"GET /v1/actions/{action_id}" in text(pending)

    decide(outbox.runtime, action_id, APPROVER, "approve", via="api")
    deadline = time.monotonic() + 30
    while (
        status := httpx.get(f"{outbox.url}/v1/actions/{action_id}", headers={"Authorization": f"Bearer {key}"}).json()[
            "status"
        ]
    ) != "succeeded":
        assert time.monotonic() < deadline, status
        time.sleep(0.1)

    # The client's retry of the same call now tells the truth: it ran, once.
    retried = asyncio.run(call())
    assert retried.structured_content is not None
    assert retried.structured_content["id"] == action_id
    assert retried.structured_content["status"] == "succeeded"
    assert len(target_server.received("/orders/9")) == 1


def test_a_cancelled_task_cancels_the_action_before_it_runs(outbox: RunningOutbox, target_server: TargetServer) -> None:
    key = outbox.agent("writer", "http-writer")

    async def scenario() -> TaskState:
        async with mcp_client(outbox.mcp_url, key, extensions=[TasksExtension()]) as client:
            task = await created_task(client, delete(target_server, "/orders/10"))
            await cancel_task(client, task.task_id)
            return await get_task(client, task.task_id)

    assert asyncio.run(scenario()).status == "cancelled"
    assert target_server.received() == []


def test_tasks_get_needs_the_extension_and_the_agent_that_owns_the_task(
    outbox: RunningOutbox, target_server: TargetServer
) -> None:
    key = outbox.agent("writer", "http-writer")
    other = outbox.agent("other", "http-writer")

    async def scenario() -> None:
        async with mcp_client(outbox.mcp_url, key, extensions=[TasksExtension()]) as client:
            task = await created_task(client, delete(target_server, "/orders/11"))
        async with mcp_client(outbox.mcp_url, key) as plain:
            with pytest.raises(MCPError) as missing:
                await get_task(plain, task.task_id)
            assert missing.value.code == -32021
        async with mcp_client(outbox.mcp_url, other, extensions=[TasksExtension()]) as stranger:
            with pytest.raises(MCPError) as foreign:
                await get_task(stranger, task.task_id)
            assert foreign.value.code == -32602
            assert "Task not found" in foreign.value.message

    asyncio.run(scenario())


def test_a_deferred_call_is_answered_at_once_pending_and_as_a_task_for_a_client_that_takes_tasks(
    make_outbox: Callable[..., RunningOutbox], policy_dir: Path, target_server: TargetServer
) -> None:
    # One request a minute to the target: the first call runs, the next ones wait for the window.
    limits = yaml.safe_load((policy_dir / "http.yaml").read_text())
    limits["hosts"][f"127.0.0.1:{target_server.port}"] = {"requests_per_minute": 1, "max_concurrent": 1}
    (policy_dir / "http.yaml").write_text(yaml.safe_dump(limits))
    outbox = make_outbox()
    key = outbox.agent("writer", "http-writer")
    post = {"method": "POST", "url": f"{target_server.base_url}/first"}

    async def scenario() -> tuple[types.CallToolResult, types.CallToolResult, CreatedTask]:
        async with mcp_client(outbox.mcp_url, key) as client:
            first = await client.call_tool("http__request", post)
            deferred = await client.call_tool("http__request", {**post, "url": f"{target_server.base_url}/second"})
        async with mcp_client(outbox.mcp_url, key, extensions=[TasksExtension()]) as tasks_client:
            task = await created_task(tasks_client, {**post, "url": f"{target_server.base_url}/third"})
        return first, deferred, task

    first, deferred, task = asyncio.run(scenario())

    assert first.structured_content is not None and first.structured_content["status"] == "succeeded"
    assert deferred.is_error is False
    assert deferred.structured_content is not None
    assert deferred.structured_content["status"] == "deferred"
    assert deferred.structured_content["not_before"] is not None
    assert "is deferred until" in text(deferred)
    assert "allows 1 request(s) per minute" in text(deferred)
    assert deferred.meta is not None and deferred.meta["dev.agent-outbox/retry_after_seconds"] > 0
    assert task.status == "working"
    assert task.status_message is not None and task.status_message.startswith("Deferred until")
    assert [r.path for r in target_server.received()] == ["/first"]
