"""The operators' pages: parse the request, call the service, render.

Every page needs a signed-in person; what changes state or hands out every recorded body (mail
pauses, a verification run, the audit export) needs an operator, and a form needs the
session's CSRF token (`outbox.console.deps`). Handlers are plain `def`s: the database reads run
in the thread pool.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import HTMLResponse, StreamingResponse

from outbox.console.deps import (
    CheckedForm,
    ConsoleForm,
    ConsolePageError,
    ConsoleRuntimeDep,
    ConsoleUserDep,
    OperatorDep,
)
from outbox.console.operate import audit, service, shadow
from outbox.console.operate.mail import mail_view
from outbox.console.operate.service import FilterInput
from outbox.console.operate.templating import render
from outbox.mail import service as mail_service
from outbox.sqltypes import utcnow
from outbox.users.schemas import ConsoleUser

router = APIRouter()

# As the mail admin API accepts (outbox.mail.schemas.PauseIn).
MAX_REASON = 2000


@router.get("/actions", name="console_actions")
def actions_page(
    request: Request,
    runtime: ConsoleRuntimeDep,
    user: ConsoleUserDep,
    agent: Annotated[str, Query(max_length=400)] = "",
    tool: Annotated[str, Query(max_length=400)] = "",
    status: Annotated[str, Query(max_length=400)] = "",
    person: Annotated[str, Query(max_length=400)] = "",
    created_from: Annotated[str, Query(alias="from", max_length=64)] = "",
    created_to: Annotated[str, Query(alias="to", max_length=64)] = "",
    cursor: Annotated[str, Query(max_length=400)] = "",
) -> HTMLResponse:
    form = FilterInput(agent, tool, status, person, created_from, created_to)
    filters, problems = service.parse_filters(form)
    before = service.decode_cursor(cursor) if cursor else None
    if cursor and before is None:
        problems.append("cursor: not a page of this list; showing the newest actions")
    listing = service.list_actions(runtime, filters, before)
    base = "/console/actions"
    query = form.query()
    next_link = f"{base}?{urlencode({**query, 'cursor': listing.next_cursor})}" if listing.next_cursor else None
    return render(
        request,
        "operate/actions.html",
        {
            "form": form,
            "problems": problems,
            "listing": listing,
            "statuses": service.STATUSES,
            "continued": before is not None,
            "first_link": f"{base}?{urlencode(query)}" if query else base,
            "next_link": next_link,
        },
        user=user,
        csrf_token=user.csrf_token,
        active="actions",
    )


@router.get("/actions/{action_id}", name="console_action")
def action_page(request: Request, action_id: str, runtime: ConsoleRuntimeDep, user: ConsoleUserDep) -> HTMLResponse:
    detail = service.action_detail(runtime, action_id)
    if detail is None:
        raise ConsolePageError(
            404, "No such action", f"There is no action {action_id!r}.", hint="Find it in the list of actions."
        )
    return render(
        request, "operate/action.html", {"detail": detail}, user=user, csrf_token=user.csrf_token, active="actions"
    )


# --- Mail ----------------------------------------------------------------------------------


def _mail_page(request: Request, runtime: ConsoleRuntimeDep, user: ConsoleUser, **context: object) -> HTMLResponse:
    try:
        view, not_configured = mail_view(runtime), None
    except mail_service.MailNotConfiguredError as exc:
        view, not_configured = None, str(exc)
    values: dict[str, object] = {
        "view": view,
        "not_configured": not_configured,
        "can_operate": user.is_operator,
        "outcome": None,
    }
    values.update({"error": None, **context})
    status_code = 422 if values["error"] else 200
    return render(
        request,
        "operate/mail.html",
        values,
        user=user,
        csrf_token=user.csrf_token,
        active="mail",
        status_code=status_code,
    )


@router.get("/mail", name="console_mail")
def mail_page(request: Request, runtime: ConsoleRuntimeDep, user: ConsoleUserDep) -> HTMLResponse:
    return _mail_page(request, runtime, user)


@router.post("/mail/pause", name="console_mail_pause")
def pause_mail(request: Request, runtime: ConsoleRuntimeDep, user: OperatorDep, form: CheckedForm) -> HTMLResponse:
    return _kill_switch(request, runtime, user, form, pause=True)


@router.post("/mail/resume", name="console_mail_resume")
def resume_mail(request: Request, runtime: ConsoleRuntimeDep, user: OperatorDep, form: CheckedForm) -> HTMLResponse:
    return _kill_switch(request, runtime, user, form, pause=False)


def _kill_switch(
    request: Request, runtime: ConsoleRuntimeDep, user: ConsoleUser, form: ConsoleForm, *, pause: bool
) -> HTMLResponse:
    """Pause or resume mail from one subdomain (or all of it) through the mail service, which
    records the audit event; the page answers with the state after it. (Rendered, not
    redirected: a notice carried in a URL could be forged by a link.)"""
    subdomain = form.text("subdomain") or None
    reason = form.text("reason")
    problem = None
    if not reason:
        problem = "Say why: a pause or resume needs a reason."
    elif len(reason) > MAX_REASON:
        problem = f"The reason is longer than {MAX_REASON} characters; shorten it."
    if problem is not None:
        return _mail_page(request, runtime, user, error=problem)
    try:
        if pause:
            outcome = mail_service.pause(runtime, subdomain=subdomain, reason=reason, actor=user.identity)
        else:
            outcome = mail_service.resume(runtime, subdomain=subdomain, actor=user.identity, reason=reason)
    except mail_service.MailOperationError as exc:
        return _mail_page(request, runtime, user, error=str(exc))
    return _mail_page(request, runtime, user, outcome=outcome)


# --- Audit ---------------------------------------------------------------------------------


def _audit_page(
    request: Request, runtime: ConsoleRuntimeDep, user: ConsoleUser, verification: audit.Verification | None
) -> HTMLResponse:
    context = {"chain": audit.chain_status(runtime), "verification": verification, "can_operate": user.is_operator}
    return render(request, "operate/audit.html", context, user=user, csrf_token=user.csrf_token, active="audit")


@router.get("/audit", name="console_audit")
def audit_page(request: Request, runtime: ConsoleRuntimeDep, user: ConsoleUserDep) -> HTMLResponse:
    return _audit_page(request, runtime, user, None)


@router.post("/audit/verify", name="console_audit_verify")
def verify_audit_now(
    request: Request, runtime: ConsoleRuntimeDep, user: OperatorDep, _form: CheckedForm
) -> HTMLResponse:
    return _audit_page(request, runtime, user, audit.verify_now(runtime))


@router.get("/audit/export", name="console_audit_export")
def export_audit(
    runtime: ConsoleRuntimeDep, _user: OperatorDep, since: Annotated[str, Query(max_length=64)] = ""
) -> StreamingResponse:
    problems: list[str] = []
    start = service.parse_moment(since.strip(), "since", problems)
    if problems:
        raise ConsolePageError(400, "Not a time", problems[0], hint="Leave it empty to export the whole chain.")
    spool = audit.export_file(runtime, start)
    name = f"outbox-audit-{utcnow():%Y%m%dT%H%M%SZ}.jsonl"
    return StreamingResponse(
        audit.chunks(spool),
        media_type="application/x-ndjson; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# --- Policy --------------------------------------------------------------------------------


@router.get("/policy", name="console_policy")
def policy_page(request: Request, runtime: ConsoleRuntimeDep, user: ConsoleUserDep) -> HTMLResponse:
    view = service.policy_view(runtime, utcnow())
    return render(
        request, "operate/policy.html", {"view": view}, user=user, csrf_token=user.csrf_token, active="policy"
    )


# --- Shadow policy -------------------------------------------------------------------------


@router.get("/shadow", name="console_shadow")
def shadow_page(
    request: Request,
    runtime: ConsoleRuntimeDep,
    user: OperatorDep,
    since: Annotated[str, Query(max_length=64)] = "",
    until: Annotated[str, Query(max_length=64)] = "",
) -> HTMLResponse:
    problems: list[str] = []
    start = service.parse_moment(since.strip(), "since", problems) or utcnow() - shadow.DEFAULT_WINDOW
    end = service.parse_moment(until.strip(), "until", problems)
    view = shadow.shadow_view(runtime, start, end)
    context = {"view": view, "since": since, "until": until, "problems": problems}
    return render(request, "operate/shadow.html", context, user=user, csrf_token=user.csrf_token, active="shadow")
