"""Tools, policy, health and admin endpoints."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from outbox.actions.schemas import ActionOut
from outbox.api.deps import AdminDep, AgentOrAdmin, CurrentAgent, RuntimeDep
from outbox.api.schemas import PolicyReloadOut, PolicyStatusOut, ReloadErrorOut, ToolOut, ToolsOut
from outbox.policy.matching import Subject
from outbox.problems import Problem
from outbox.tools.listing import tool_listing, unavailable_tools

router = APIRouter()

# What a tool call answers with, for every tool: the action (POST /v1/actions). Built once.
ACTION_SCHEMA = ActionOut.model_json_schema()


@router.get(
    "/v1/tools",
    tags=["tools"],
    response_model=ToolsOut,
    summary="The tools you may call, with the JSON Schema of their arguments and answers",
)
def list_tools(
    runtime: RuntimeDep,
    agent: CurrentAgent,
    include_all: Annotated[
        bool,
        Query(
            alias="all",
            description=(
                "List every tool, including those no rule lets you call (`callable: false`, with the reason)."
            ),
        ),
    ] = False,
) -> ToolsOut:
    """The tools policy lets you call at all (allow, or approve by a human, for some target), in
    name order; `?all=true` for the whole catalogue, marked. Each entry has the shape of a
    function-calling definition (`name`, `description`, `parameters`), so it can be handed to a
    model as is. Some model APIs refuse dots in function names: `function_name` is the same tool
    spelled with `__`, and POST /v1/actions accepts it. `available: false` marks a tool that cannot
    run on this server now (calls are refused with 503 until the operator fixes what
    `unavailable_reason` names)."""
    active = runtime.policy.current
    listing = tool_listing(
        active,
        Subject(agent.principal, agent.roles),
        output_schema=ACTION_SCHEMA,
        include_all=include_all,
    )
    return ToolsOut(
        tools=[ToolOut.of(entry) for entry in listing],
        policy_version=active.version,
    )


@router.get(
    "/v1/policy",
    tags=["policy"],
    response_model=PolicyStatusOut,
    response_model_exclude_unset=True,
    summary="The policy version this server runs",
)
def policy_status(runtime: RuntimeDep, caller: AgentOrAdmin) -> PolicyStatusOut:
    """`outbox policy status --server …` compares this across replicas to report skew.

    Takes an agent key or the admin token. Where the policy lives on the server (`directory`,
    `git_commit`) and the text of a failed reload (which quotes files) are shown to admins only."""
    info = runtime.policy.info()
    failure = info.last_failure
    status = PolicyStatusOut(
        version=info.version,
        loaded_at=info.loaded_at.isoformat(),
        rules=info.rules,
        indexed=info.indexed,
        tools=list(info.tools),
        last_reload_error=ReloadErrorOut(at=failure.at.isoformat()) if failure else None,
    )
    if caller.is_admin:
        status.directory = info.directory
        status.git_commit = info.git_commit
        if status.last_reload_error is not None and failure is not None:
            status.last_reload_error.error = failure.error
    return status


@router.post(
    "/v1/admin/policy/reload", tags=["admin"], response_model=PolicyReloadOut, summary="Reload the policy directory"
)
async def reload_policy(runtime: RuntimeDep, _admin: AdminDep) -> PolicyReloadOut:
    ok, message = await run_in_threadpool(runtime.policy.reload)
    if not ok:
        raise Problem(
            422,
            "policy-invalid",
            "Policy not reloaded",
            f"The policy directory failed to load; the previous version keeps running: {message}",
            hint="Run `outbox policy check` locally, fix the file named, and reload again.",
            running_version=runtime.policy.current.version,
        )
    return PolicyReloadOut(version=message, loaded_at=runtime.policy.current.snapshot.loaded_at.isoformat())


@router.get("/healthz", tags=["health"], summary="The process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], summary="Database, broker and policy are ready; tools that cannot run here")
def readyz(runtime: RuntimeDep) -> JSONResponse:
    """503 `not ready` when the database or the broker is unreachable. A tool that cannot run on
    this server (no usable sandbox, a secret or mount missing) does not take the service out of
    rotation: every other tool works, and calls to that one are refused (503) without being
    recorded. The answer then says `degraded`, still 200, and `checks.tools` names each such
    tool and what is missing."""
    checks: dict[str, Any] = {}
    try:
        with runtime.db.session() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    checks["broker"] = "ok" if runtime.dispatcher.healthy() else "error: unreachable"
    active = runtime.policy.current
    checks["policy"] = active.version
    unavailable = unavailable_tools(active.tools)
    checks["tools"] = [{"tool": name, "unavailable_reason": reason} for name, reason in unavailable.items()]
    ready = checks["database"] == "ok" and checks["broker"] == "ok"
    status = "not ready" if not ready else "degraded" if unavailable else "ready"
    return JSONResponse({"status": status, "checks": checks}, status_code=200 if ready else 503)
