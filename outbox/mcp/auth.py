"""Who calls /mcp: the agent API key as a Bearer token, checked on every HTTP request.

The key is looked up with the same function and the same lock-free read as the HTTP API
(`outbox.agents.service.authenticate`, never cached), so a revoked key stops working on the next
request. The SDK's `TokenVerifier` hook is built for OAuth access tokens (scopes, expiry, an
authorization server that issued them) and its 401 body is not problem+json, so a plain ASGI
check in front of the SDK's transport does the job instead.

A refused request is answered 401 with `WWW-Authenticate: Bearer resource_metadata="…"` (RFC
9728 §5.1), and the protected resource metadata it points to is published (RFC 9728 §3). No
authorization server issues these keys (`outbox agents create` does), so the document names
none: `authorization_servers` is optional in RFC 9728, and an OAuth-only client cannot get a
key by itself; it is configured with the header (docs/mcp.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import anyio.to_thread
from fastapi.security import HTTPBearer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from outbox.agents.service import AuthenticatedAgent, authenticate
from outbox.config import Settings
from outbox.problems import PROBLEM_MEDIA_TYPE, problem_document

if TYPE_CHECKING:
    from outbox.runtime import Runtime  # annotations only: the app hands the runtime in

MCP_PATH: Final = "/mcp"
# RFC 9728 §3.1: the well-known prefix goes between the host and the resource's path.
METADATA_PATH: Final = "/.well-known/oauth-protected-resource" + MCP_PATH
# The authenticated agent rides in the ASGI scope; the SDK hands handlers the same request.
AGENT_SCOPE_KEY: Final = "outbox.mcp.agent"


# The header is read as the HTTP API reads it: FastAPI's Bearer scheme (scheme case-insensitive).
_BEARER: Final = HTTPBearer(auto_error=False)


async def bearer_token(scope: Scope) -> str | None:
    """The credential of `Authorization: Bearer <token>`, or None."""
    credentials = await _BEARER(Request(scope))
    return (credentials.credentials.strip() or None) if credentials is not None else None


def _lookup(runtime: Runtime, token: str) -> AuthenticatedAgent | None:
    with runtime.db.single_reads() as connection:
        return authenticate(connection, token)


async def authenticated_agent(runtime: Runtime, token: str) -> AuthenticatedAgent | None:
    """The agent the key belongs to, or None for an unknown or revoked key (read in a thread:
    the database driver blocks)."""
    return await anyio.to_thread.run_sync(_lookup, runtime, token)


def base_url(settings: Settings, scope: Scope) -> str:
    """Where clients reach this server: the configured public URL, else what this request used."""
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    return str(Request(scope).base_url).rstrip("/")


def unauthorized(settings: Settings, scope: Scope, *, token_sent: bool) -> Response:
    """401 for a request without a usable key. RFC 6750 §3.1: the `invalid_token` error code only
    when a token was sent; RFC 9728 §5.1: where the resource metadata is."""
    challenge = f'Bearer resource_metadata="{base_url(settings, scope)}{METADATA_PATH}"'
    if token_sent:
        challenge += ', error="invalid_token", error_description="The API key is unknown or has been revoked."'
        detail = "The API key is unknown or has been revoked."
    else:
        detail = "No API key: the Authorization header is missing or not a Bearer token."
    body = problem_document(
        401,
        "unauthorized",
        "Unauthorized",
        detail,
        hint="Send `Authorization: Bearer <key>` with a key from `outbox agents create` on every MCP request.",
    )
    return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": challenge}, media_type=PROBLEM_MEDIA_TYPE)


def protected_resource_metadata(settings: Settings, scope: Scope) -> dict[str, Any]:
    """RFC 9728 §2 metadata for /mcp. `resource` is the URL the client used (§3.3 makes it check)."""
    return {
        "resource": base_url(settings, scope) + MCP_PATH,
        "bearer_methods_supported": ["header"],
        "resource_name": "agent-outbox MCP server (agent API keys from `outbox agents create`)",
    }


def agent_of(request: Any) -> AuthenticatedAgent:
    """The agent `McpEndpoint` authenticated for this HTTP request (the SDK's `ctx.request`)."""
    agent = request.scope.get(AGENT_SCOPE_KEY) if isinstance(request, Request) else None
    if not isinstance(agent, AuthenticatedAgent):
        # Every request reaches the SDK through McpEndpoint, which authenticates first.
        raise RuntimeError("an MCP request reached a handler without an authenticated agent")
    return agent
