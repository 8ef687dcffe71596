"""The MCP face under test: the real app under a real uvicorn (a thread, a free port), embedded
workers executing for real, and the SDK's own client speaking to it over Streamable HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import httpx2
import mcp_types as types
import pytest
import uvicorn
from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.streamable_http import streamable_http_client

from outbox.api.app import create_app
from outbox.mcp.schemas import TaskParams
from outbox.runtime import Runtime
from tests.support.agents import make_agent
from workers.embedded import EmbeddedDispatcher


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """SQLite unless a test asks for more (`parametrize("backend", [...], indirect=True)`)."""
    return str(request.param)


@dataclass
class RunningOutbox:
    runtime: Runtime
    url: str

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    def agent(self, name: str, *roles: str) -> str:
        return make_agent(self.runtime.db, name, list(roles))


class _Uvicorn:
    """The real app under a real uvicorn, in a thread, on a free port."""

    def __init__(self, runtime: Runtime) -> None:
        config = uvicorn.Config(create_app(runtime=runtime), host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            assert self.thread.is_alive(), "uvicorn stopped while starting"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def make_outbox(make_runtime: Callable[..., Runtime]) -> Iterator[Callable[..., RunningOutbox]]:
    """Start an outbox with settings overrides; embedded workers run the actions for real."""
    running: list[_Uvicorn] = []

    def start(**overrides: object) -> RunningOutbox:
        runtime = make_runtime(EmbeddedDispatcher(), **overrides)
        server = _Uvicorn(runtime)
        url = server.__enter__()
        running.append(server)
        return RunningOutbox(runtime, url)

    yield start
    for server in running:
        server.__exit__()


@pytest.fixture
def outbox(make_outbox: Callable[..., RunningOutbox]) -> RunningOutbox:
    return make_outbox()


# --- The client side of the Tasks extension (io.modelcontextprotocol/tasks), as a test client
# implements it with the SDK's extension hooks: the SDK ships none (docs/mcp.md).


class CreatedTask(types.Result):
    """A `CreateTaskResult` (`resultType: "task"`)."""

    result_type: Literal["task"] = "task"
    task_id: str
    status: str
    status_message: str | None = None


class GetTaskRequest(types.Request[TaskParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskParams
    # The extension routes tasks/* by task id: the Mcp-Name header carries it.
    name_param = "taskId"


class CancelTaskRequest(types.Request[TaskParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskParams
    name_param = "taskId"


class TaskState(types.Result):
    """A tasks/get answer (`DetailedTask`)."""

    task_id: str
    status: str
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None
    poll_interval_ms: int | None = None
    result: dict[str, Any] | None = None


async def get_task(client: Client, task_id: str) -> TaskState:
    return await client.session.send_request(GetTaskRequest(params=TaskParams(task_id=task_id)), TaskState)


async def cancel_task(client: Client, task_id: str) -> types.EmptyResult:
    return await client.session.send_request(CancelTaskRequest(params=TaskParams(task_id=task_id)), types.EmptyResult)


async def _refuse_to_resolve(task: CreatedTask, _ctx: ClaimContext) -> types.CallToolResult:
    raise AssertionError(f"tests poll tasks themselves (call_tool with allow_claimed=True); got {task.task_id}")


class TasksExtension(ClientExtension):
    identifier = "io.modelcontextprotocol/tasks"

    def claims(self) -> Sequence[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=CreatedTask, resolve=_refuse_to_resolve)]


@asynccontextmanager
async def mcp_client(
    url: str,
    key: str | None,
    *,
    mode: str = "auto",
    extensions: Sequence[ClientExtension] | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[Client]:
    """The SDK's client over Streamable HTTP, the agent's key in the Authorization header."""
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    async with (
        httpx2.AsyncClient(headers=sent, timeout=httpx2.Timeout(30.0)) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode, extensions=extensions, cache=None) as client,
    ):
        yield client


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))
