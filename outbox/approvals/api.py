"""Admin API for approvals: the same operations as `outbox approvals`, for consoles and scripts.

Authenticated with the admin token. The deciding human is named in the body (`as`) and goes
through the same approver policy as a Slack click; a console in front of this API is expected
to authenticate its users and pass their identity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Query
from starlette.concurrency import run_in_threadpool

from outbox.api.deps import AdminDep, RuntimeDep
from outbox.approvals.authority import ApprovalRefused, RefusalCode
from outbox.approvals.schemas import ApprovalOut, ApprovalPage, ApproveIn, DecisionResultOut, DenyIn
from outbox.approvals.service import decide, get_approval, list_approvals
from outbox.deliveries import service as delivery
from outbox.problems import Problem

if TYPE_CHECKING:
    from outbox.runtime import Runtime

router = APIRouter(prefix="/v1/admin/approvals", tags=["approvals"])

_STATUS = {
    RefusalCode.NOT_FOUND: 404,
    RefusalCode.INVALID_IDENTITY: 422,
    RefusalCode.MISSING_REASON: 422,
    RefusalCode.SELF_APPROVAL: 403,
    RefusalCode.NOT_AUTHORIZED: 403,
    RefusalCode.NOT_PENDING: 409,
    RefusalCode.EXPIRED: 409,
    RefusalCode.DIGEST_MISMATCH: 409,
}
_HINTS = {
    RefusalCode.INVALID_IDENTITY: (
        "Name the deciding human as a bare e-mail address (oncall@example.com), user:<name> or "
        "slack:<Slack user id>; it is compared in its canonical form (docs/approvals.md)."
    ),
    RefusalCode.SELF_APPROVAL: "Ask another approver: the agent and the person it acts for never approve.",
    RefusalCode.NOT_AUTHORIZED: "Ask someone with an approver role for these targets, or change the policy in git.",
    RefusalCode.NOT_PENDING: "GET the approval to see who decided and when.",
    RefusalCode.EXPIRED: "Nothing ran. The agent may submit the call again if it is still needed.",
    RefusalCode.DIGEST_MISMATCH: "GET the approval again and decide on what it shows now.",
}


def refusal_problem(refusal: ApprovalRefused) -> Problem:
    return Problem(
        _STATUS[refusal.code],
        f"approval-{refusal.code.value.replace('_', '-')}",
        "Approval decision refused",
        refusal.message,
        hint=_HINTS.get(refusal.code),
        code=refusal.code.value,
    )


@router.get("", response_model=ApprovalPage, summary="Approval requests, newest first")
def list_requests(
    runtime: RuntimeDep,
    _admin: AdminDep,
    status: Literal["pending", "approved", "rejected", "expired", "cancelled", "all"] = "pending",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ApprovalPage:
    with runtime.db.session() as session:
        return ApprovalPage(items=list_approvals(session, status=None if status == "all" else status, limit=limit))


@router.get("/{ref}", response_model=ApprovalOut, summary="One approval request (by its id or its action's id)")
def show_request(ref: str, runtime: RuntimeDep, _admin: AdminDep) -> ApprovalOut:
    try:
        with runtime.db.session() as session:
            return get_approval(session, ref)
    except ApprovalRefused as refusal:
        raise refusal_problem(refusal) from refusal


def _decide(
    runtime: Runtime, ref: str, body: ApproveIn, background: BackgroundTasks, *, deny: DenyIn | None
) -> DecisionResultOut:
    try:
        if deny is None:
            result = decide(runtime, ref, body.as_identity, "approve", via="api", digest=body.digest)
        else:
            result = decide(
                runtime,
                ref,
                deny.as_identity,
                "deny",
                via="api",
                reason=deny.reason,
                may_resubmit=deny.may_resubmit,
                digest=deny.digest,
            )
    except ApprovalRefused as refusal:
        raise refusal_problem(refusal) from refusal
    background.add_task(delivery.deliver_due, runtime, ids=list(result.deliveries))
    return DecisionResultOut(outcome=result.outcome, message=result.message, approval=result.approval)


@router.post("/{ref}/approve", response_model=DecisionResultOut, summary="Approve as a named human")
async def approve_request(
    ref: str, body: ApproveIn, runtime: RuntimeDep, _admin: AdminDep, background: BackgroundTasks
) -> DecisionResultOut:
    return await run_in_threadpool(_decide, runtime, ref, body, background, deny=None)


@router.post("/{ref}/deny", response_model=DecisionResultOut, summary="Deny as a named human, with a reason")
async def deny_request(
    ref: str, body: DenyIn, runtime: RuntimeDep, _admin: AdminDep, background: BackgroundTasks
) -> DecisionResultOut:
    return await run_in_threadpool(_decide, runtime, ref, body, background, deny=body)
