"""The MCP server at /mcp: the official SDK's low-level `Server` over its Streamable HTTP transport.

Which protocol versions: the SDK's session manager routes a request by its `MCP-Protocol-Version`
header. 2026-07-28 requests (no handshake, each request carries its version and capabilities in
`_meta`) go to the SDK's single-exchange path; requests without the header or with a
handshake-era version (2024-11-05, 2025-03-26, 2025-06-18, 2025-11-25: `initialize` first) go to
its legacy path, run stateless here (no `Mcp-Session-Id`, a fresh transport per HTTP request), so
any replica answers any request and nothing lives in process memory between requests.

The low-level `Server` rather than `MCPServer`: the tools are not Python functions but the
policy's catalogue, different for every agent and every policy version, so tools/list and
tools/call are two handlers. Transport security (DNS rebinding protection: allowed `Host` and
`Origin` headers) is the SDK's, with the hosts and origins of the settings, and stays on.

`McpEndpoint` is what the FastAPI app mounts. It checks the Host header (the SDK's own check, run
first so that a refused host is never answered with a URL built from it), authenticates the
agent on every HTTP request (auth.py), keeps the request's exact bytes for the record, and hands
the request to the SDK's session manager, which runs inside the app's lifespan (`serving`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import anyio.to_thread
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from outbox.config import Settings
from outbox.logs import bind_log_context
from outbox.mcp import auth, calls, tasks
from outbox.mcp.schemas import ACTION_OUTPUT_SCHEMA, TASKS_EXTENSION, TOOL_NAME_META, UNAVAILABLE_META, TaskParams
from outbox.policy.matching import Subject
from outbox.problems import PROBLEM_MEDIA_TYPE, problem_document
from outbox.sqltypes import utcnow
from outbox.toolkit.registry import find_tool
from outbox.tools.listing import tool_listing

if TYPE_CHECKING:
    from outbox.agents.service import AuthenticatedAgent
    from outbox.runtime import Runtime

# The request as received, kept on the action: the exact bytes, and the headers that say how it
# was sent. Credentials (Authorization, cookies) are never recorded.
_BODY_SCOPE_KEY: Final = "outbox.mcp.body"
_RECORDED_HEADERS: Final = (
    "content-type",
    "accept",
    "user-agent",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "x-request-id",
)
INSTRUCTIONS: Final = (
    "Every tool call goes through the agent-outbox: policy decides it, a human may have to approve "
    "it, and it is recorded. A call answered as pending is not done: follow it instead of calling again. "
    "An identical call within the deduplication window replays the first one instead of running twice."
)


def transport_security(settings: Settings) -> TransportSecuritySettings:
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(settings.mcp_allowed_hosts),
        allowed_origins=list(settings.mcp_allowed_origins),
    )


@dataclass(slots=True)
class _Handlers:
    """The MCP methods, bound to the runtime of the app that serves them."""

    runtime: Runtime
    # Argument schemas by tool name, for the policy version in `_schemas_of` (building one can
    # take most of a millisecond; the SDK asks for it on every tools/call).
    _schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    _schemas_of: str | None = None

    async def list_tools(
        self, ctx: ServerRequestContext[Any], _params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        agent = auth.agent_of(ctx.request)
        return await anyio.to_thread.run_sync(self._tools_of, agent)

    def _tools_of(self, agent: AuthenticatedAgent) -> types.ListToolsResult:
        """The tools this agent may call at all under the running policy, in name order. The MCP
        name is the function name (`http__request`): many model APIs refuse dots in tool names."""
        listing = tool_listing(
            self.runtime.policy.current, Subject(agent.principal, agent.roles), output_schema=ACTION_OUTPUT_SCHEMA
        )
        tools = []
        for entry in listing:
            meta: dict[str, Any] = {TOOL_NAME_META: entry.name}
            description = entry.description
            if not entry.available:
                meta[UNAVAILABLE_META] = entry.unavailable_reason
                description = f"UNAVAILABLE on this server now: {entry.unavailable_reason}. {description}"
            tools.append(
                types.Tool(
                    name=entry.function_name,
                    title=entry.name,
                    description=description,
                    input_schema=entry.parameters,
                    output_schema=dict(entry.output_schema),
                    meta=meta,
                )
            )
        # Per agent, and a policy reload changes it: private, and stale at once (2026-07-28 hints).
        return types.ListToolsResult(tools=tools, ttl_ms=0, cache_scope="private")

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | dict[str, Any]:
        agent = auth.agent_of(ctx.request)
        meta = dict(ctx.meta) if ctx.meta else None
        call = calls.ToolCall(params.name, params.arguments, meta, _request_record(ctx))
        return await calls.call_tool(self.runtime, agent, call)

    async def get_task(self, ctx: ServerRequestContext[Any], params: TaskParams) -> dict[str, Any]:
        return await tasks.get_task(self.runtime, auth.agent_of(ctx.request), params.task_id, ctx.meta)

    async def cancel_task(self, ctx: ServerRequestContext[Any], params: TaskParams) -> dict[str, Any]:
        return await tasks.cancel_task(self.runtime, auth.agent_of(ctx.request), params.task_id, ctx.meta)

    async def update_task(self, ctx: ServerRequestContext[Any], params: TaskParams) -> dict[str, Any]:
        return await tasks.update_task(self.runtime, auth.agent_of(ctx.request), params.task_id, ctx.meta)

    def input_schema(self, name: str) -> dict[str, Any] | None:
        """A tool's argument schema by name, for the SDK's `Mcp-Param-*` header check, which
        would otherwise run the whole tools/list handler before every call."""
        active = self.runtime.policy.current
        if self._schemas_of != active.version:
            self._schemas, self._schemas_of = {}, active.version
        schema = self._schemas.get(name)
        if schema is None:
            tool = find_tool(active.tools, name)
            if tool is None:
                return None  # not cached: the names a client sends are unbounded
            schema = self._schemas[name] = tool.args_schema()
        return schema


def build_server(runtime: Runtime) -> Server[Any]:
    handlers = _Handlers(runtime)
    server: Server[Any] = Server(
        "agent-outbox",
        version=importlib.metadata.version("agent-outbox"),
        title="agent-outbox",
        instructions=INSTRUCTIONS,
        get_tool_input_schema=handlers.input_schema,
        on_list_tools=handlers.list_tools,
    )
    # Registered by method: an answer may be a task (a `resultType` of an extension), which the
    # constructor's `on_call_tool` signature does not name.
    server.add_request_handler("tools/call", types.CallToolRequestParams, handlers.call_tool)
    server.add_request_handler("tasks/get", TaskParams, handlers.get_task)
    server.add_request_handler("tasks/cancel", TaskParams, handlers.cancel_task)
    server.add_request_handler("tasks/update", TaskParams, handlers.update_task)
    server.extensions[TASKS_EXTENSION] = {}
    return server


def _request_record(ctx: ServerRequestContext[Any]) -> dict[str, Any]:
    """What the action keeps of the request: it came over MCP, the JSON-RPC message as received
    (exact bytes), how it was sent (headers, never credentials), when and from where."""
    request = ctx.request
    record: dict[str, Any] = {
        "face": "mcp",
        "method": "tools/call",
        "protocol_version": ctx.protocol_version,
        "jsonrpc_id": ctx.request_id,
        "received_at": utcnow().isoformat(),
    }
    if isinstance(request, Request):
        record["path"] = request.url.path
        record["headers"] = {h: request.headers[h] for h in _RECORDED_HEADERS if h in request.headers}
        record["body"] = request.scope.get(_BODY_SCOPE_KEY)
        record["client"] = request.client.host if request.client else None
    return record


@contextlib.asynccontextmanager
async def running_transport(
    server: Server[Any], settings: Settings
) -> AsyncIterator[tuple[StreamableHTTPSessionManager, TransportSecurityMiddleware]]:
    """The SDK's stateless Streamable HTTP session manager for `server`, running, and the Host
    and Origin check it applies (DNS-rebinding protection), for the life of the block. The live
    server and the replay twin serve MCP through it alike."""
    manager = StreamableHTTPSessionManager(
        server,
        stateless=True,
        security_settings=transport_security(settings),
        max_request_body_size=settings.max_request_bytes,
    )
    async with manager.run():
        yield manager, TransportSecurityMiddleware(transport_security(settings))


@dataclass(frozen=True, slots=True)
class _Serving:
    runtime: Runtime
    manager: StreamableHTTPSessionManager
    security: TransportSecurityMiddleware


class McpEndpoint:
    """The ASGI app the FastAPI app mounts at /mcp (and /mcp/)."""

    def __init__(self) -> None:
        self._serving: _Serving | None = None

    @contextlib.asynccontextmanager
    async def serving(self, runtime: Runtime) -> AsyncIterator[None]:
        """Run the SDK's session manager for the app's lifetime (its lifespan instructions: one
        manager per app, `run()` entered once, in the lifespan)."""
        async with running_transport(build_server(runtime), runtime.settings) as (manager, security):
            self._serving = _Serving(runtime, manager, security)
            try:
                yield
            finally:
                self._serving = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        serving = self._serving
        if serving is None:
            await not_serving()(scope, receive, send)
            return
        request = Request(scope, receive)
        refused = await serving.security.validate_request(request, is_post=False)
        if refused is not None:
            await refused(scope, receive, send)
            return
        token = await auth.bearer_token(scope)
        agent = await auth.authenticated_agent(serving.runtime, token) if token is not None else None
        if agent is None:
            await auth.unauthorized(serving.runtime.settings, scope, token_sent=token is not None)(scope, receive, send)
            return
        if scope.get("method") != "POST":
            await post_only()(scope, receive, send)
            return
        scope[auth.AGENT_SCOPE_KEY] = agent
        bind_log_context(agent=agent.name)
        receive = await _kept_body(scope, receive, serving.runtime.settings.max_request_bytes)
        await serving.manager.handle_request(scope, receive, send)

    async def metadata(self, request: Request) -> Response:
        """GET /.well-known/oauth-protected-resource/mcp (RFC 9728)."""
        serving = self._serving
        if serving is None:
            return not_serving()
        return JSONResponse(auth.protected_resource_metadata(serving.runtime.settings, request.scope))


async def _kept_body(scope: Scope, receive: Receive, limit: int) -> Receive:
    """Read the body (up to `limit` bytes and one more: a longer one is refused by the SDK's own
    limit), keep its text in the scope for the record, and replay it to the transport."""
    chunks: list[bytes] = []
    size = 0
    more = True
    trailing: Message | None = None
    while more and size <= limit:
        message = await receive()
        if message["type"] != "http.request":
            trailing = message
            break
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = bool(message.get("more_body", False))
    raw = b"".join(chunks)
    scope[_BODY_SCOPE_KEY] = raw.decode("utf-8", "replace")
    pending: list[Message] = [{"type": "http.request", "body": raw, "more_body": more}]
    if trailing is not None:
        pending.append(trailing)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


def post_only() -> Response:
    """Streamable HTTP lets a server refuse GET (the stream for messages outside any answer) with
    405. This one is stateless and sends nothing outside its answers, so a GET stream would only
    hold a connection open, and without sessions there is nothing to DELETE."""
    body = problem_document(
        405,
        "method-not-allowed",
        "Method Not Allowed",
        "This MCP server answers POST only: it is stateless, sends no messages outside the answer "
        "to a request, and keeps no sessions to delete.",
        hint="Send each JSON-RPC request as a POST to /mcp.",
    )
    return JSONResponse(body, status_code=405, media_type=PROBLEM_MEDIA_TYPE, headers={"Allow": "POST"})


def not_serving() -> Response:
    body = problem_document(
        503,
        "mcp-not-started",
        "MCP server not started",
        "The MCP server starts with the application's lifespan, which has not run (or has ended).",
        hint="Retry in a moment; if it persists, the server is shutting down or misconfigured.",
    )
    return JSONResponse(body, status_code=503, media_type=PROBLEM_MEDIA_TYPE, headers={"Retry-After": "1"})
