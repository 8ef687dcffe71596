"""The approvers' pages: the inbox, one approval request, and the decision forms.

Thin handlers over `outbox.approvals.service` (the same calls as the admin API, the CLI and
Slack): `check_may_decide` says whether this person may decide now and why not, `decide` records
the decision bound to the digest the page showed (`via="console"`). Plain `def` handlers: the
services are synchronous and run in the thread pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Path, Query, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from outbox.approvals.authority import ApprovalRefused, RefusalCode, person_of
from outbox.approvals.schemas import ApprovalOut, DecisionOut, Verdict
from outbox.approvals.service import check_may_decide, decide, get_approval
from outbox.console.deps import CheckedForm, ConsolePageError, ConsoleRuntimeDep, ConsoleUserDep
from outbox.console.inbox import inbox_for
from outbox.console.previews import preview_of
from outbox.console.security import CONSOLE_PREFIX
from outbox.console.templating import render
from outbox.deliveries import service as delivery
from outbox.runtime import Runtime
from outbox.users.schemas import ConsoleUser

router = APIRouter(prefix=CONSOLE_PREFIX)

# How often the inbox asks for its list again (htmx polling); the page says so.
INBOX_POLL_SECONDS = 3

# The e-mail preview frame's own policy: the message's inline styles and embedded (data:)
# images render as the recipient would see them; nothing runs (`sandbox`, no script-src) and
# nothing is fetched from anywhere, so opening a preview cannot tell a sender it was read.
EMAIL_FRAME_POLICY = "; ".join(
    (
        "default-src 'none'",
        "style-src 'unsafe-inline'",
        "img-src data:",
        "font-src data:",
        "form-action 'none'",
        "frame-ancestors 'self'",
        "base-uri 'none'",
        "sandbox",
    )
)

_REFUSAL_STATUS = {
    RefusalCode.NOT_FOUND: 404,
    RefusalCode.INVALID_IDENTITY: 403,
    RefusalCode.SELF_APPROVAL: 403,
    RefusalCode.NOT_AUTHORIZED: 403,
    RefusalCode.MISSING_REASON: 422,
    RefusalCode.NOT_PENDING: 409,
    RefusalCode.EXPIRED: 409,
    RefusalCode.DIGEST_MISMATCH: 409,
}
# Refusals that mean the page is out of date: the request is no longer the one shown.
_STALE = {RefusalCode.NOT_PENDING, RefusalCode.EXPIRED, RefusalCode.DIGEST_MISMATCH}

_OUTCOME_MESSAGES = {
    "approved": "You approved it. The quorum is reached: the call is queued to run.",
    "recorded": "Your approval is recorded. The call waits for another approver.",
    "rejected": "You denied it. The agent receives your reason.",
    "duplicate": "You had already decided on this request; nothing changed.",
}

Ref = Annotated[str, Path(min_length=3, max_length=64)]


# ---------------------------------------------------------------------------------------------
# Inbox


@router.get("", name="console_inbox")
@router.get("/inbox")
def inbox_page(request: Request, runtime: ConsoleRuntimeDep, user: ConsoleUserDep) -> HTMLResponse:
    return render(
        request,
        "inbox.html",
        {"inbox": inbox_for(runtime, user.identity), "poll_seconds": INBOX_POLL_SECONDS},
        user=user,
        csrf_token=user.csrf_token,
        active="inbox",
    )


@router.get("/inbox/items")
def inbox_items(request: Request, runtime: ConsoleRuntimeDep, user: ConsoleUserDep) -> HTMLResponse:
    """The inbox's list alone, for htmx to swap in every few seconds."""
    return render(request, "_inbox_items.html", {"inbox": inbox_for(runtime, user.identity)}, user=user)


# ---------------------------------------------------------------------------------------------
# One request


@dataclass(frozen=True)
class DecisionState:
    """What this person can do on the request now, as the approvals service answers it."""

    # Why the Approve / Deny form is not offered (None: it is).
    approve_refusal: ApprovalRefused | None
    deny_refusal: ApprovalRefused | None
    # This person's own earlier decision (under any of their identities).
    mine: DecisionOut | None

    @property
    def stale(self) -> ApprovalRefused | None:
        """Why nobody can decide this request any more (decided, expired), or None."""
        for refusal in (self.approve_refusal, self.deny_refusal):
            if refusal is not None and refusal.code in _STALE:
                return refusal
        return None


def _refusal(runtime: Runtime, ref: str, identity: str, verdict: Verdict) -> ApprovalRefused | None:
    try:
        check_may_decide(runtime, ref, identity, verdict)
    except ApprovalRefused as refusal:
        return refusal
    return None


def _load(runtime: Runtime, ref: str) -> ApprovalOut:
    try:
        with runtime.db.session() as session:
            return get_approval(session, ref)
    except ApprovalRefused as refusal:
        raise ConsolePageError(
            404,
            "No such approval request",
            refusal.message,
            hint="The inbox lists the requests waiting for you.",
        ) from refusal


def _decision_state(runtime: Runtime, approval: ApprovalOut, user: ConsoleUser) -> DecisionState:
    me = person_of(runtime.policy.current.snapshot, user.identity)
    mine = next((d for d in approval.decisions if d.approver in me), None)
    return DecisionState(
        approve_refusal=_refusal(runtime, approval.id, user.identity, "approve"),
        deny_refusal=_refusal(runtime, approval.id, user.identity, "deny"),
        mine=mine,
    )


def _approval_page(
    request: Request,
    runtime: Runtime,
    user: ConsoleUser,
    ref: str,
    *,
    message: str | None = None,
    refusal: ApprovalRefused | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    approval = _load(runtime, ref)
    return render(
        request,
        "approval.html",
        {
            "approval": approval,
            "preview": preview_of(approval),
            "state": _decision_state(runtime, approval, user),
            "message": message,
            "refusal": refusal,
            "stale_codes": _STALE,
        },
        status_code=status_code,
        user=user,
        csrf_token=user.csrf_token,
        active="inbox",
    )


@router.get("/approvals/{ref}", name="console_approval")
def approval_page(
    request: Request,
    ref: Ref,
    runtime: ConsoleRuntimeDep,
    user: ConsoleUserDep,
    outcome: Annotated[Literal["approved", "recorded", "rejected", "duplicate"] | None, Query()] = None,
) -> HTMLResponse:
    return _approval_page(
        request, runtime, user, ref, message=_OUTCOME_MESSAGES[outcome] if outcome is not None else None
    )


@router.get("/approvals/{ref}/email")
def email_frame(ref: Ref, runtime: ConsoleRuntimeDep, _user: ConsoleUserDep) -> HTMLResponse:
    """The e-mail's HTML part, alone, for the approval page's sandboxed iframe."""
    preview = preview_of(_load(runtime, ref))
    if preview.kind != "email" or preview.html is None:
        raise ConsolePageError(404, "No HTML part", "This call sends no HTML e-mail part.")
    return HTMLResponse(
        preview.html,
        headers={
            "Content-Security-Policy": EMAIL_FRAME_POLICY,
            "X-Frame-Options": "SAMEORIGIN",
            "Cross-Origin-Resource-Policy": "same-origin",
        },
    )


def _decided(
    request: Request,
    runtime: Runtime,
    user: ConsoleUser,
    ref: str,
    verdict: Verdict,
    background: BackgroundTasks,
    *,
    digest: str | None,
    reason: str | None = None,
    may_resubmit: bool = False,
) -> Response:
    if not digest:
        raise ConsolePageError(
            400,
            "No digest",
            "The form did not say which version of the request you saw, so no decision was recorded.",
            hint="Open the approval page again and decide there.",
        )
    try:
        result = decide(
            runtime,
            ref,
            user.identity,
            verdict,
            via="console",
            reason=reason,
            may_resubmit=may_resubmit,
            digest=digest,
        )
    except ApprovalRefused as refusal:
        return _approval_page(
            request, runtime, user, ref, refusal=refusal, status_code=_REFUSAL_STATUS.get(refusal.code, 409)
        )
    # The Slack message shows the new state too (as after a decision through the admin API).
    background.add_task(delivery.deliver_due, runtime, ids=list(result.deliveries))
    return RedirectResponse(
        f"{CONSOLE_PREFIX}/approvals/{result.approval.id}?outcome={result.outcome}", status_code=303
    )


@router.post("/approvals/{ref}/approve")
def approve(
    request: Request,
    ref: Ref,
    runtime: ConsoleRuntimeDep,
    user: ConsoleUserDep,
    form: CheckedForm,
    background: BackgroundTasks,
) -> Response:
    return _decided(request, runtime, user, ref, "approve", background, digest=form.get("digest"))


@router.post("/approvals/{ref}/deny")
def deny(
    request: Request,
    ref: Ref,
    runtime: ConsoleRuntimeDep,
    user: ConsoleUserDep,
    form: CheckedForm,
    background: BackgroundTasks,
) -> Response:
    reason = form.text("reason")[:2000] or None
    return _decided(
        request,
        runtime,
        user,
        ref,
        "deny",
        background,
        digest=form.get("digest"),
        reason=reason,
        may_resubmit=form.checked("may_resubmit"),
    )
