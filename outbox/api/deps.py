"""Request dependencies: the runtime, the calling agent, the admin."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from outbox.agents.service import AuthenticatedAgent, authenticate
from outbox.logs import bind_log_context
from outbox.problems import Problem
from outbox.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "unauthorized",
        "Unauthorized",
        detail,
        hint="Send `Authorization: Bearer <key>` with a key from `outbox agents create`.",
        headers={"WWW-Authenticate": 'Bearer realm="agent-outbox"'},
    )


def current_agent(request: Request, runtime: RuntimeDep) -> AuthenticatedAgent:
    token = _bearer(request)
    if token is None:
        raise _unauthorized("No API key: the Authorization header is missing or not a Bearer token.")
    with runtime.db.read_session() as session:
        agent = authenticate(session, token)
    if agent is None:
        raise _unauthorized("The API key is unknown or has been revoked.")
    bind_log_context(agent=agent.name)
    return agent


CurrentAgent = Annotated[AuthenticatedAgent, Depends(current_agent)]


def require_admin(request: Request, runtime: RuntimeDep) -> str:
    configured = runtime.settings.admin_token
    if configured is None:
        raise Problem(
            401,
            "admin-disabled",
            "Admin API disabled",
            "No admin token is configured on this server.",
            hint="Set OUTBOX_ADMIN_TOKEN and send it as `Authorization: Bearer <token>`.",
        )
    token = _bearer(request)
    if token is None or not hmac.compare_digest(token.encode(), configured.get_secret_value().encode()):
        raise _unauthorized("The admin token is missing or wrong.")
    return "admin"


AdminDep = Annotated[str, Depends(require_admin)]
