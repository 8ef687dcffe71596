"""Mail endpoints: RFC 8058 one-click unsubscribe, feedback ingestion, and the admin API.

- `POST /unsubscribe/{token}`: no login, no redirect, idempotent; suppresses at once (RFC 8058
  §3.2). `GET` answers a small page whose button POSTs, because people (and link scanners) open
  the URL: a GET never unsubscribes anyone.
- `POST /v1/mail/events` (provider events as JSON) and `POST /v1/mail/dsn` (a raw RFC 3464
  bounce, `message/rfc822`), authenticated with `Authorization: Bearer <OUTBOX_MAIL_EVENTS_TOKEN>`.
- `/v1/admin/mail…` with the admin token: status, suppressions, kill switches, DNS checks.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from outbox.api.deps import AdminDep, RuntimeDep
from outbox.api.security import MailEventsToken, token_matches
from outbox.errors import ValidationFailed
from outbox.mail import service
from outbox.mail.environment import unsubscribe_secret
from outbox.mail.feedback.events import parse_provider_events
from outbox.mail.feedback.ingest import unsubscribe
from outbox.mail.models import SuppressionReason
from outbox.mail.schemas import (
    MailStatusOut,
    PauseChangeOut,
    PauseIn,
    RemovedOut,
    SuppressionIn,
    SuppressionOut,
    SuppressionPage,
)
from outbox.mail.sending.unsubscribe import InvalidUnsubscribeTokenError, verify_unsubscribe_token
from outbox.problems import Problem, pydantic_errors

if TYPE_CHECKING:
    from outbox.runtime import Runtime  # annotations only: the edges hand the runtime in

# A DSN carries the returned message (or its headers); anything larger is not a bounce report.
MAX_DSN_BYTES = 10 * 1024 * 1024
DSN_MEDIA_TYPES = frozenset({"message/rfc822", "message/global", "multipart/report"})


def _operation_problem(exc: service.MailOperationError) -> Problem:
    if isinstance(exc, service.MailNotConfiguredError):
        return Problem(404, "mail-not-configured", "Mail is not configured", str(exc), hint="Add policies/mail.yaml.")
    return Problem(422, "mail-request-refused", "Mail request refused", str(exc))


# --- RFC 8058 one-click unsubscribe --------------------------------------------------------


def _secret(runtime: Runtime) -> bytes:
    try:
        return unsubscribe_secret(runtime.settings)
    except ValueError as exc:
        raise Problem(503, "unsubscribe-disabled", "Unsubscribe not configured", str(exc)) from exc


unsubscribe_router = APIRouter(tags=["mail"])

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 32rem; margin: 4rem auto">
<h1>{title}</h1>
{body}
</body></html>
"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(title=escape(title), body=body),
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


@unsubscribe_router.get("/unsubscribe/{token}", response_class=HTMLResponse, summary="Confirm unsubscribing")
def unsubscribe_page(token: str, runtime: RuntimeDep) -> HTMLResponse:
    """A page with one button. Opening the link changes nothing: scanners open links too."""
    try:
        request = verify_unsubscribe_token(_secret(runtime), token)
    except InvalidUnsubscribeTokenError:
        return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", status=400)
    body = (
        f"<p>Stop mail from <strong>{escape(request.subdomain)}</strong> to "
        f"<strong>{escape(request.recipient)}</strong>?</p>"
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return _page("Unsubscribe", body)


@unsubscribe_router.post("/unsubscribe/{token}", response_class=HTMLResponse, summary="RFC 8058 one-click unsubscribe")
async def unsubscribe_one_click(token: str, runtime: RuntimeDep) -> HTMLResponse:
    """Suppress the recipient from the subdomain named in the token, immediately. No login, no
    redirect; a second POST answers the same (the body, `List-Unsubscribe=One-Click`, is not
    required: what authorises the request is the signed token)."""
    try:
        request = verify_unsubscribe_token(_secret(runtime), token)
    except InvalidUnsubscribeTokenError as exc:
        raise Problem(
            400,
            "unsubscribe-token-invalid",
            "Unsubscribe link not valid",
            f"The token was not issued by this server ({exc}).",
        ) from exc
    await run_in_threadpool(unsubscribe, runtime.db, request)
    return _page(
        "Unsubscribed",
        f"<p>{escape(request.recipient)} will get no more mail from {escape(request.subdomain)}.</p>",
    )


# --- Feedback ingestion --------------------------------------------------------------------

feedback_router = APIRouter(prefix="/v1/mail", tags=["mail"])


def require_events_token(credentials: MailEventsToken, runtime: RuntimeDep) -> None:
    configured = runtime.settings.mail_events_token
    if configured is None:
        raise Problem(
            503,
            "mail-events-disabled",
            "Mail feedback ingestion disabled",
            "No OUTBOX_MAIL_EVENTS_TOKEN is configured on this server.",
            hint="Set OUTBOX_MAIL_EVENTS_TOKEN and send it as `Authorization: Bearer <token>`.",
        )
    if not token_matches(credentials, configured.get_secret_value()):
        raise Problem(
            401,
            "unauthorized",
            "Unauthorized",
            "The mail events token is missing or wrong.",
            headers={"WWW-Authenticate": 'Bearer realm="agent-outbox mail events"'},
        )


EventsAuth = Annotated[None, Depends(require_events_token)]


@feedback_router.post("/events", summary="Bounce, complaint and unsubscribe events from a provider")
async def post_events(request: Request, runtime: RuntimeDep, _auth: EventsAuth) -> dict[str, Any]:
    """Body `{"events": [...]}` (outbox.mail.feedback.events). Events are ingested once per `event_id`:
    redelivering a webhook is harmless."""
    try:
        events = parse_provider_events(await request.body())
    except ValidationError as exc:
        raise ValidationFailed(pydantic_errors(exc.errors(), prefix="body")) from exc
    try:
        report = await run_in_threadpool(service.ingest_events, runtime, events, "mail-events")
    except service.MailOperationError as exc:
        raise _operation_problem(exc) from exc
    return report.as_dict()


@feedback_router.post("/dsn", summary="A raw RFC 3464 delivery status notification")
async def post_dsn(request: Request, runtime: RuntimeDep, _auth: EventsAuth) -> dict[str, Any]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in DSN_MEDIA_TYPES:
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            "Send the bounce message as it was received, with Content-Type message/rfc822 "
            f"(got {media_type or 'none'}).",
        )
    raw = await request.body()
    if len(raw) > MAX_DSN_BYTES:
        raise Problem(413, "too-large", "Too large", f"A DSN over {MAX_DSN_BYTES} bytes is not accepted.")
    try:
        report = await run_in_threadpool(service.ingest_dsn, runtime, raw, "mail-dsn")
    except service.MailOperationError as exc:
        raise _operation_problem(exc) from exc
    return report.as_dict()


# --- Admin ---------------------------------------------------------------------------------

admin_router = APIRouter(prefix="/v1/admin/mail", tags=["mail"])


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except service.MailOperationError as exc:
        raise _operation_problem(exc) from exc


@admin_router.get("", response_model=MailStatusOut, summary="Usage, warm-up, breakers, pauses and DNS per subdomain")
def get_status(runtime: RuntimeDep, _admin: AdminDep) -> MailStatusOut:
    result: MailStatusOut = _call(service.mail_status, runtime)
    return result


@admin_router.post("/dns-check", summary="Check every subdomain's DNS now and store the verdicts")
def post_dns_check(runtime: RuntimeDep, _admin: AdminDep) -> list[dict[str, Any]]:
    reports = _call(service.check_dns, runtime)
    return [report.model_dump(mode="json") for report in reports]


@admin_router.get("/suppressions", response_model=SuppressionPage, summary="The suppression list")
def get_suppressions(
    runtime: RuntimeDep,
    _admin: AdminDep,
    recipient: str | None = None,
    subdomain: Annotated[str | None, Query(description='A subdomain, or "*" for all-subdomain entries')] = None,
    reason: SuppressionReason | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> SuppressionPage:
    page: SuppressionPage = _call(
        service.list_suppressions,
        runtime,
        recipient=recipient,
        subdomain=subdomain,
        reason=reason,
        limit=limit,
        offset=offset,
    )
    return page


@admin_router.post("/suppressions", response_model=SuppressionOut, summary="Suppress a recipient")
def post_suppression(body: SuppressionIn, runtime: RuntimeDep, _admin: AdminDep, response: Response) -> SuppressionOut:
    row, added = _call(service.add_suppression, runtime, body, "admin-api")
    response.status_code = 201 if added else 200
    result: SuppressionOut = row
    return result


@admin_router.delete("/suppressions/{recipient}", response_model=RemovedOut, summary="Remove a suppression")
def delete_suppression(
    recipient: str,
    runtime: RuntimeDep,
    _admin: AdminDep,
    subdomain: Annotated[str | None, Query(description='Only this scope ("*": the all-subdomain entry)')] = None,
) -> RemovedOut:
    removed = _call(service.remove_suppression, runtime, recipient, subdomain, "admin-api")
    if not removed:
        raise Problem(404, "not-found", "Not suppressed", f"{recipient} has no such suppression.")
    return RemovedOut(removed=removed)


def _pause_call(runtime: Runtime, body: PauseIn, *, resume: bool) -> PauseChangeOut:
    actor = f"admin-api:{body.as_identity}"
    if resume:
        result: PauseChangeOut = _call(
            service.resume,
            runtime,
            subdomain=body.subdomain,
            agent=body.agent,
            actor=actor,
            # The default reason names a pause: a resume records only a reason that was sent.
            reason=body.reason if "reason" in body.model_fields_set else None,
        )
    else:
        result = _call(
            service.pause, runtime, subdomain=body.subdomain, agent=body.agent, reason=body.reason, actor=actor
        )
    return result


@admin_router.post(
    "/pause", response_model=PauseChangeOut, summary="Kill switch: pause all mail, a subdomain or an agent"
)
def post_pause(body: PauseIn, runtime: RuntimeDep, _admin: AdminDep) -> PauseChangeOut:
    return _pause_call(runtime, body, resume=False)


@admin_router.post("/resume", response_model=PauseChangeOut, summary="Lift a pause (and reset a subdomain's breaker)")
def post_resume(body: PauseIn, runtime: RuntimeDep, _admin: AdminDep) -> PauseChangeOut:
    return _pause_call(runtime, body, resume=True)


router = APIRouter()
router.include_router(unsubscribe_router)
router.include_router(feedback_router)
router.include_router(admin_router)
