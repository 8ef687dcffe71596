"""Request dependencies: the runtime, the calling agent, the admin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from outbox.agents.service import AuthenticatedAgent, authenticate
from outbox.api.security import AdminToken, AgentKey, bearer_token, token_matches
from outbox.logs import bind_log_context
from outbox.problems import Problem
from outbox.runtime import Runtime


# Dependencies that do no I/O are `async def`: FastAPI runs a plain `def` dependency in its
# thread pool, and a thread hop per request costs more than what such a dependency does.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def agent_unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "unauthorized",
        "Unauthorized",
        detail,
        hint="Send `Authorization: Bearer <key>` with a key from `outbox agents create`.",
        headers={"WWW-Authenticate": 'Bearer realm="agent-outbox"'},
    )


def current_agent(credentials: AgentKey, runtime: RuntimeDep) -> AuthenticatedAgent:
    token = bearer_token(credentials)
    if token is None:
        raise agent_unauthorized("No API key: the Authorization header is missing or not a Bearer token.")
    with runtime.db.single_reads() as connection:
        agent = authenticate(connection, token)
    if agent is None:
        raise agent_unauthorized("The API key is unknown or has been revoked.")
    bind_log_context(agent=agent.name)
    return agent


CurrentAgent = Annotated[AuthenticatedAgent, Depends(current_agent)]


def _admin_unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "unauthorized",
        "Unauthorized",
        detail,
        hint=(
            "Admin endpoints take the server's admin token, not an agent key: send "
            "`Authorization: Bearer <OUTBOX_ADMIN_TOKEN>` with the value this server was started with."
        ),
        headers={"WWW-Authenticate": 'Bearer realm="agent-outbox admin"'},
    )


def _is_admin_token(runtime: Runtime, credentials: HTTPAuthorizationCredentials | None) -> bool:
    configured = runtime.settings.admin_token
    return configured is not None and token_matches(credentials, configured.get_secret_value())


async def require_admin(credentials: AdminToken, runtime: RuntimeDep) -> str:
    if runtime.settings.admin_token is None:
        raise Problem(
            401,
            "admin-disabled",
            "Admin API disabled",
            "No admin token is configured on this server.",
            hint="Set OUTBOX_ADMIN_TOKEN and send it as `Authorization: Bearer <token>`.",
        )
    if bearer_token(credentials) is None:
        raise _admin_unauthorized("The admin token is missing: no `Authorization: Bearer` header.")
    if not _is_admin_token(runtime, credentials):
        raise _admin_unauthorized("The admin token is wrong.")
    return "admin"


AdminDep = Annotated[str, Depends(require_admin)]


@dataclass(frozen=True, slots=True)
class Caller:
    """An agent or the admin: for endpoints both may read, showing admins more."""

    agent: AuthenticatedAgent | None

    @property
    def is_admin(self) -> bool:
        return self.agent is None


def agent_or_admin(agent_key: AgentKey, admin_token: AdminToken, runtime: RuntimeDep) -> Caller:
    # One header, two schemes: the OpenAPI document lists either credential for these endpoints.
    if _is_admin_token(runtime, admin_token):
        return Caller(agent=None)
    return Caller(agent=current_agent(agent_key, runtime))


AgentOrAdmin = Annotated[Caller, Depends(agent_or_admin)]
