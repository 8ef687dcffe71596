"""Tools, policy, health and admin endpoints."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from outbox.api.deps import AdminDep, AgentOrAdmin, CurrentAgent, RuntimeDep
from outbox.api.schemas import PolicyReloadOut, PolicyStatusOut, ReloadErrorOut, ToolOut, ToolsOut
from outbox.problems import Problem
from outbox.toolkit.registry import function_name

router = APIRouter()


@router.get(
    "/v1/tools", tags=["tools"], response_model=ToolsOut, summary="Every tool with the JSON Schema of its arguments"
)
def list_tools(runtime: RuntimeDep, _agent: CurrentAgent) -> ToolsOut:
    """Each entry has the shape of a function-calling definition (`name`, `description`,
    `parameters`), so it can be handed to a model as is. Some model APIs refuse dots in function
    names: `function_name` is the same tool spelled with `__`, and POST /v1/actions accepts it."""
    tools = runtime.policy.current.tools
    return ToolsOut(
        tools=[
            ToolOut(
                name=name,
                function_name=function_name(name),
                description=tool.description,
                parameters=tool.args_schema(),
            )
            for name, tool in tools.items()
        ],
        policy_version=runtime.policy.current.version,
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


@router.get("/readyz", tags=["health"], summary="Database, broker and policy are ready")
def readyz(runtime: RuntimeDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with runtime.db.session() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    checks["broker"] = "ok" if runtime.dispatcher.healthy() else "error: unreachable"
    checks["policy"] = runtime.policy.current.version
    ready = checks["database"] == "ok" and checks["broker"] == "ok"
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
    )
