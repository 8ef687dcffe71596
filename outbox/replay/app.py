"""The twin's HTTP app: the agent contract's faces, answered from a recording.

`POST /v1/actions` validates as the live endpoint does (the Idempotency-Key header, the strict
JSON body, `parse_envelope`) and answers with the live `respond_with`: the same statuses, headers
and bodies. `GET /v1/actions/{id}` reads back an action this session was answered with;
`GET /v1/tools` lists the tools (catalogue.py); MCP is at /mcp. The live error mapping and client
input middleware answer every refusal as the live service does.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from starlette.routing import Route

from outbox.actions import service
from outbox.actions.api import json_body, prefer_wait, respond_with
from outbox.api.client_input import ClientInputMiddleware
from outbox.api.deps import agent_unauthorized
from outbox.api.errors import install_error_handlers
from outbox.api.middleware import RequestContextMiddleware
from outbox.api.schemas import ToolOut, ToolsOut
from outbox.api.security import AgentKey, bearer_token
from outbox.api.system import ACTION_SCHEMA
from outbox.config import Settings
from outbox.errors import DomainError
from outbox.idempotency.service import validate_key
from outbox.mcp.auth import MCP_PATH
from outbox.problems import PROBLEM_MEDIA_TYPE
from outbox.replay.catalogue import tool_entries
from outbox.replay.mcp import TwinMcpEndpoint
from outbox.replay.twin import NOT_IN_RECORDING_STATUS, Submission, Twin

# The live service's longest `Prefer: wait`; the twin answers at once (a recording does not
# change), so the value only goes into Preference-Applied.
MAX_WAIT_SECONDS = 60


async def twin_caller(credentials: AgentKey, request: Request) -> str:
    """The twin's token, checked as the live service checks an agent key, with its 401s; the
    caller is known by the token's label."""
    given = bearer_token(credentials)
    if given is None:
        raise agent_unauthorized("No API key: the Authorization header is missing or not a Bearer token.")
    if not secrets.compare_digest(given.encode(), str(request.app.state.twin_token).encode()):
        raise agent_unauthorized("The API key is unknown or has been revoked.")
    return str(request.app.state.twin_label)


TwinCaller = Annotated[str, Depends(twin_caller)]


def create_twin_app(twin: Twin, *, token: str, label: str, settings: Settings) -> FastAPI:
    mcp = TwinMcpEndpoint(twin, token=token, label=label, settings=settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with mcp.serving():
            yield

    app = FastAPI(title="agent-outbox replay twin", version="0.1.0", lifespan=lifespan, openapi_url=None)
    app.state.twin_token, app.state.twin_label = token, label
    install_error_handlers(app)

    @app.post("/v1/actions", status_code=202)
    async def submit_action(
        request: Request,
        who: TwinCaller,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
        prefer: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        key = validate_key(idempotency_key)
        return await _submit(twin, request, (who, key), prefer, settings.max_request_bytes)

    @app.get("/v1/actions/{action_id}")
    def read_action(action_id: str, _who: TwinCaller) -> dict[str, Any]:
        return twin.read(action_id)

    @app.get("/v1/tools", response_model=ToolsOut)
    def list_tools(_who: TwinCaller) -> ToolsOut:
        entries = tool_entries(twin, output_schema=ACTION_SCHEMA)
        return ToolsOut(tools=[ToolOut.of(entry) for entry in entries], policy_version=twin.policy_version)

    @app.get("/healthz")
    @app.get("/readyz")
    def ready() -> dict[str, Any]:
        return {"status": "ok", "replay": True, "recorded_calls": len(twin.actions)}

    for path in (MCP_PATH, MCP_PATH + "/"):
        app.router.routes.append(Route(path, endpoint=mcp, include_in_schema=False))
    # As the live app: the client input rules first, inside the request context.
    app.add_middleware(ClientInputMiddleware)
    app.add_middleware(RequestContextMiddleware)
    return app


async def _submit(
    twin: Twin, request: Request, caller: tuple[str, str], prefer: str | None, limit: int
) -> JSONResponse:
    """POST /v1/actions after the key (`caller`: the token's label, the key): the body parsed as
    live, the twin's answer, the live headers."""
    label, key = caller
    received = await json_body(request, limit)
    try:
        envelope = service.parse_envelope(received.value)
    except DomainError as refusal:
        twin.refused("http", label, received.value, refusal.detail)
        raise
    answered = twin.submit(Submission("http", label, envelope, key))
    if answered.answer is None:
        assert answered.missing is not None
        headers = {"Idempotent-Replayed": "true"} if answered.replayed else None
        return JSONResponse(
            answered.missing.problem(), NOT_IN_RECORDING_STATUS, headers=headers, media_type=PROBLEM_MEDIA_TYPE
        )
    wait = prefer_wait(prefer, MAX_WAIT_SECONDS)
    # Live, a wait applies to a call that was pending when received (allowed or sent to a
    # human), so its answer says it did; the twin answers at once, the recording being settled.
    action = answered.answer.action or {}
    was_pending = (action.get("decision") or {}).get("effect") in ("allow", "approve") and not answered.replayed
    return respond_with(answered.answer, wait_applied=wait if wait is not None and was_pending else None)
