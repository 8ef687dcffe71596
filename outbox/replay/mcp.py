"""The twin's MCP face at /mcp: the official SDK's low-level server, stateless, as the live one.

tools/list offers the tools of catalogue.py (by function name, as live); tools/call parses the
call as the live face does (`_meta` fields, `parse_envelope`), asks the twin, and shapes a
matched answer with the live face's own `call_result`, so the model sees the result the original
model saw. A call not in the recording is an `isError` result saying so, naming the nearest recorded call.
Authentication is the twin's bearer token, refused with the live face's 401.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from outbox.actions import service
from outbox.config import Settings
from outbox.errors import DomainError
from outbox.idempotency.service import validate_key
from outbox.mcp import auth
from outbox.mcp.results import call_result, refusal_result
from outbox.mcp.schemas import ACTION_OUTPUT_SCHEMA, TOOL_NAME_META, CallMeta
from outbox.mcp.server import INSTRUCTIONS, not_serving, post_only, running_transport
from outbox.replay.catalogue import tool_entries
from outbox.replay.twin import NotInRecording, Submission, Twin

# The label of the token that authenticated the request, for the session log.
LABEL_SCOPE_KEY: Final = "outbox.replay.label"


def not_in_recording_result(missing: NotInRecording) -> types.CallToolResult:
    problem = missing.problem()
    lines = [f"{problem['title']}: {problem['detail']}", f"Hint: {problem['hint']}"]
    return types.CallToolResult(content=[types.TextContent(text="\n".join(lines))], is_error=True)


@dataclass(slots=True)
class _Handlers:
    twin: Twin

    async def list_tools(
        self, _ctx: ServerRequestContext[Any], _params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        tools = [
            types.Tool(
                name=entry.function_name,
                title=entry.name,
                description=entry.description,
                input_schema=entry.parameters,
                output_schema=dict(entry.output_schema),
                meta={TOOL_NAME_META: entry.name},
            )
            for entry in tool_entries(self.twin, output_schema=ACTION_OUTPUT_SCHEMA)
        ]
        return types.ListToolsResult(tools=tools, ttl_ms=0, cache_scope="private")

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        request = ctx.request
        label = request.scope.get(LABEL_SCOPE_KEY) if isinstance(request, Request) else None
        payload: dict[str, Any] = {"tool": self.twin.tool_name(params.name), "args": params.arguments or {}}
        try:
            fields = CallMeta.of(dict(ctx.meta) if ctx.meta else None)
            key = validate_key(fields.idempotency_key) if fields.idempotency_key is not None else None
            envelope = service.parse_envelope({**payload, **fields.envelope_fields()})
        except DomainError as refusal:
            self.twin.refused("mcp", str(label), payload, refusal.detail)
            return refusal_result(refusal)
        try:
            answered = self.twin.submit(Submission("mcp", str(label), envelope, key))
        except DomainError as refusal:
            return refusal_result(refusal)
        if answered.answer is not None:
            return call_result(answered.answer)
        assert answered.missing is not None
        return not_in_recording_result(answered.missing)


def build_server(twin: Twin) -> Server[Any]:
    handlers = _Handlers(twin)
    # Named and introduced as the live server is: the model under evaluation sees the same.
    server: Server[Any] = Server(
        "agent-outbox",
        version=importlib.metadata.version("agent-outbox"),
        title="agent-outbox",
        instructions=INSTRUCTIONS,
        on_list_tools=handlers.list_tools,
    )
    server.add_request_handler("tools/call", types.CallToolRequestParams, handlers.call_tool)
    return server


@dataclass(frozen=True, slots=True)
class _Serving:
    manager: StreamableHTTPSessionManager
    security: TransportSecurityMiddleware


class TwinMcpEndpoint:
    """The ASGI app mounted at /mcp: Host check, the twin's token, then the SDK's transport."""

    def __init__(self, twin: Twin, *, token: str, label: str, settings: Settings) -> None:
        self.twin, self.token, self.label, self.settings = twin, token, label, settings
        self._serving: _Serving | None = None

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        async with running_transport(build_server(self.twin), self.settings) as (manager, security):
            self._serving = _Serving(manager, security)
            try:
                yield
            finally:
                self._serving = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        serving = self._serving
        if serving is None:
            await not_serving()(scope, receive, send)
            return
        refused = await serving.security.validate_request(Request(scope, receive), is_post=False)
        if refused is not None:
            await refused(scope, receive, send)
            return
        token = await auth.bearer_token(scope)
        if token is None or not secrets.compare_digest(token.encode(), self.token.encode()):
            await auth.unauthorized(self.settings, scope, token_sent=token is not None)(scope, receive, send)
            return
        if scope.get("method") != "POST":
            await post_only()(scope, receive, send)
            return
        scope[LABEL_SCOPE_KEY] = self.label
        await serving.manager.handle_request(scope, receive, send)
