"""HTTP edge of the agent contract: parse, call the actions service, format."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from outbox.actions import service
from outbox.actions.schemas import ActionOut, ActionPage, AdminActionOut
from outbox.actions.waiting import wait_until_settled
from outbox.api.client_input import ParsedBody, parse_body, parsed_body, read_limited
from outbox.api.deps import AdminDep, CurrentAgent, RuntimeDep
from outbox.api.schemas import PolicyReloadOut
from outbox.idempotency.service import validate_key
from outbox.problems import PROBLEM_MEDIA_TYPE, Problem
from outbox.sqltypes import utcnow

if TYPE_CHECKING:
    from outbox.runtime import Runtime  # annotations only: the app hands the runtime in

router = APIRouter(prefix="/v1", tags=["actions"])

_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d{1,6})\"?", re.IGNORECASE)
# Headers kept in the recorded request; credentials are never recorded.
_RECORDED_HEADERS = ("content-type", "user-agent", "idempotency-key", "prefer", "x-request-id")


async def json_body(request: Request, limit: int) -> ParsedBody:
    """The body as parsed by the strict JSON middleware; a body sent without a Content-Type is
    parsed here by the same rules."""
    parsed = parsed_body(request)
    if parsed is not None:
        return parsed
    content_type = request.headers.get("content-type")
    if content_type is not None and "json" not in content_type.lower():
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"The body must be JSON, not {content_type}.",
            hint="Send `Content-Type: application/json`.",
        )
    return parse_body(await read_limited(request.receive, request.headers, limit))


def prefer_wait(prefer: str | None, maximum: int) -> int | None:
    if not prefer:
        return None
    match = _PREFER_WAIT.search(prefer)
    if match is None:
        return None
    return min(int(match.group(1)), maximum)


def _load_action_body(runtime: Runtime, agent: Any, action_id: str) -> dict[str, Any]:
    with runtime.db.read_session() as session:
        return ActionOut.of(service.get_action(session, agent, action_id)).model_dump(mode="json")


@router.post(
    "/actions",
    status_code=202,
    response_model=ActionOut,
    responses={
        200: {"description": "The action is terminal (after `Prefer: wait`, or a replayed key whose action finished)"},
        400: {"description": "Missing or invalid Idempotency-Key, invalid JSON"},
        401: {"description": "Missing, unknown or revoked API key"},
        403: {"description": "Denied by policy (the action is recorded), or rejected by a human or expired"},
        409: {"description": "Same Idempotency-Key still held by a request an earlier version is processing"},
        413: {"description": "Body too large"},
        422: {"description": "Invalid arguments, or Idempotency-Key reused for another request"},
        503: {"description": "The tool cannot run on this server now; nothing recorded, the key not used"},
    },
    summary="Submit a tool call",
)
async def submit_action(
    request: Request,
    runtime: RuntimeDep,
    agent: CurrentAgent,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    prefer: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Submit `{tool, args, on_behalf_of?, reason?}`; answers 202 with the action.

    `Prefer: wait=N` (N ≤ 60) holds the answer until the action is settled for now (terminal:
    200; deferred: 202 with `not_before` and Retry-After; a human's rejection: 403) or N seconds
    pass. The same Idempotency-Key again answers with the action as it is now
    (`Idempotent-Replayed: true`) and runs nothing.
    """
    key = validate_key(idempotency_key)
    received = await json_body(request, runtime.settings.max_request_bytes)
    envelope = service.parse_envelope(received.value)
    record = {
        "method": request.method,
        "path": request.url.path,
        "query": request.url.query,
        "headers": {h: request.headers[h] for h in _RECORDED_HEADERS if h in request.headers},
        "body": received.text,
        "received_at": utcnow().isoformat(),
        "client": request.client.host if request.client else None,
    }
    answer = await run_in_threadpool(service.submit, runtime, agent, envelope, key, record)
    wait = prefer_wait(prefer, runtime.settings.max_wait_seconds)
    applied: int | None = None
    if wait is not None and answer.status == 202:
        answer = await wait_until_settled(runtime, agent, answer, wait)
        applied = wait
    return respond_with(answer, wait_applied=applied)


def respond_with(answer: service.Answer, *, wait_applied: int | None) -> JSONResponse:
    headers: dict[str, str] = {}
    if answer.replayed:
        headers["Idempotent-Replayed"] = "true"
    if answer.location:
        headers["Location"] = answer.location
    if answer.retry_after is not None:
        # Deferred (send window, budget): nothing happens before not_before.
        headers["Retry-After"] = str(answer.retry_after)
    if wait_applied is not None:
        headers["Preference-Applied"] = f"wait={wait_applied}"
    media_type = PROBLEM_MEDIA_TYPE if answer.status >= 400 else "application/json"
    return JSONResponse(answer.body, status_code=answer.status, headers=headers, media_type=media_type)


@router.get("/actions/{action_id}", response_model=ActionOut, summary="Read one of your actions")
def read_action(action_id: str, runtime: RuntimeDep, agent: CurrentAgent) -> dict[str, Any]:
    return _load_action_body(runtime, agent, action_id)


# Admin reads (docs/shadow-policy.md): any agent's action, with what agents never see.
admin_router = APIRouter(prefix="/v1/admin", tags=["admin"])


@admin_router.get(
    "/actions/{action_id}",
    response_model=AdminActionOut,
    summary="Read any action, with the shadow policy's decision",
)
def read_action_as_admin(action_id: str, runtime: RuntimeDep, _admin: AdminDep) -> AdminActionOut:
    """The action as its agent reads it, plus `agent_id` and `shadow`: what the shadow policy
    (OUTBOX_SHADOW_POLICY_DIR) decided for it, never enforced. Takes the admin token."""
    return service.read_as_admin(runtime, action_id)


@admin_router.post(
    "/policy/shadow/reload",
    response_model=PolicyReloadOut,
    summary="Reload the shadow policy directory",
)
async def reload_shadow_policy(runtime: RuntimeDep, _admin: AdminDep) -> PolicyReloadOut:
    """Like `POST /v1/admin/policy/reload`, for the shadow policy: a directory that fails to
    load keeps the previous shadow (422). 404 when no shadow policy is configured."""
    store = runtime.shadow_policy
    if store is None:
        raise Problem(
            404,
            "no-shadow-policy",
            "No shadow policy",
            "This server runs no shadow policy.",
            hint="Set OUTBOX_SHADOW_POLICY_DIR to a policy directory and restart the server.",
        )
    ok, message = await run_in_threadpool(store.reload)
    if not ok:
        raise Problem(
            422,
            "policy-invalid",
            "Shadow policy not reloaded",
            f"The shadow policy directory failed to load; the previous shadow keeps deciding: {message}",
            hint="Run `outbox policy check <dir>` locally, fix the file named, and reload again.",
            running_version=store.current.version,
        )
    return PolicyReloadOut(version=message, loaded_at=store.current.snapshot.loaded_at.isoformat())


@router.get("/actions", response_model=ActionPage, summary="List your actions, newest first")
def list_actions(
    runtime: RuntimeDep,
    agent: CurrentAgent,
    status: str | None = None,
    tool: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> ActionPage:
    with runtime.db.read_session() as session:
        return service.list_actions(session, agent, status=status, tool=tool, cursor=cursor, limit=limit)


@router.post(
    "/actions/{action_id}/cancel", response_model=ActionOut, summary="Cancel a queued, deferred or awaiting action"
)
def cancel_action(action_id: str, runtime: RuntimeDep, agent: CurrentAgent) -> ActionOut:
    return ActionOut.of(service.cancel_action(runtime, agent, action_id))
