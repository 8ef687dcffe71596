"""Signing in and out of the console. The users service decides everything (passwords, the
rate limit, whether a proxy's identity header is trusted); these handlers carry its answer to
the browser as a cookie or as a message on the sign-in page.

The sign-in form has no session to bind a CSRF token to, so it carries a double-submit token: a
random value in a short-lived cookie and in the form, which another site can neither read nor
set. That stops login CSRF (a page signing the victim in as the attacker).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from outbox.console.deps import (
    SESSION_COOKIE,
    SIGN_IN_PATH,
    CheckedForm,
    ConsoleRuntimeDep,
    read_form,
    safe_next,
)
from outbox.console.security import CONSOLE_PREFIX, clear_console_cookie, set_console_cookie
from outbox.console.templating import render
from outbox.errors import DomainError
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from outbox.users.errors import ConsoleMisconfigured, ProxyIdentityRefused, SignInRefused, TooManySignInAttempts
from outbox.users.schemas import SignedIn
from outbox.users.service import session_user, sign_in, sign_in_from_proxy, sign_out

SIGN_IN_CSRF_COOKIE = "outbox_console_sign_in"
_SIGN_IN_FORM_SECONDS = 3600

router = APIRouter(prefix=CONSOLE_PREFIX)


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _signed_in(request: Request, signed_in: SignedIn, next_path: str) -> RedirectResponse:
    response = RedirectResponse(safe_next(next_path), status_code=303)
    max_age = max(1, int((signed_in.user.expires_at - utcnow()).total_seconds()))
    set_console_cookie(request, response, SESSION_COOKIE, signed_in.session_token, max_age=max_age)
    clear_console_cookie(request, response, SIGN_IN_CSRF_COOKIE)
    return response


def _form(
    request: Request,
    *,
    next_path: str,
    email: str = "",
    error: DomainError | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "sign_in.html",
        {"next": safe_next(next_path), "email": email, "error": error, "notice": notice, "form_token": token},
        status_code=status_code,
    )
    set_console_cookie(request, response, SIGN_IN_CSRF_COOKIE, token, max_age=_SIGN_IN_FORM_SECONDS)
    if isinstance(error, TooManySignInAttempts) and error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def _proxy_identity(runtime: Runtime, request: Request) -> str | None:
    return request.headers.get(runtime.settings.console_identity_header)


@router.get("/sign-in", name="console_sign_in")
def sign_in_page(
    request: Request,
    runtime: ConsoleRuntimeDep,
    next: Annotated[str | None, Query(max_length=2000)] = None,
    ended: Annotated[str | None, Query(max_length=8)] = None,
    signed_out: Annotated[str | None, Query(max_length=8)] = None,
) -> Response:
    """The sign-in form; or, behind a trusted authenticating proxy, the session at once."""
    next_path = safe_next(next)
    if session_user(runtime, request.cookies.get(SESSION_COOKIE)) is not None:
        return RedirectResponse(next_path, status_code=303)
    notice = None
    if signed_out:
        notice = "You are signed out."
    elif ended:
        notice = "Your session has ended (it expired, or was closed elsewhere). Sign in again."
    header = _proxy_identity(runtime, request)
    # After signing out, the proxy would sign the person straight back in: wait for a click.
    if header is not None and not signed_out:
        try:
            return _signed_in(request, sign_in_from_proxy(runtime, header, _client_ip(request)), next_path)
        except ProxyIdentityRefused as refused:
            return _form(request, next_path=next_path, error=refused, status_code=403)
        except ConsoleMisconfigured as misconfigured:
            return _form(request, next_path=next_path, error=misconfigured, status_code=503)
    return _form(request, next_path=next_path, notice=notice)


@router.post("/sign-in")
async def sign_in_submit(request: Request, runtime: ConsoleRuntimeDep) -> Response:
    form = await read_form(request)
    next_path = safe_next(form.get("next"))
    email = form.text("email")[:320]
    cookie = request.cookies.get(SIGN_IN_CSRF_COOKIE, "")
    submitted = form.get("form_token") or ""
    if not cookie or not hmac.compare_digest(cookie.encode(), submitted.encode("utf-8", "surrogatepass")):
        return _form(
            request,
            next_path=next_path,
            email=email,
            notice="The sign-in form had expired or did not come from this console; nothing was checked. Try again.",
            status_code=403,
        )
    password = form.get("password") or ""
    try:
        signed_in = await _in_thread(runtime, email, password, _client_ip(request))
    except SignInRefused as refused:
        status = 429 if isinstance(refused, TooManySignInAttempts) else 401
        return _form(request, next_path=next_path, email=email, error=refused, status_code=status)
    return _signed_in(request, signed_in, next_path)


async def _in_thread(runtime: Runtime, email: str, password: str, client_ip: str | None) -> SignedIn:
    """Password hashing is slow on purpose (argon2); it must not block the event loop."""
    return await run_in_threadpool(sign_in, runtime, email, password, client_ip)


@router.post("/sign-out")
def sign_out_submit(request: Request, runtime: ConsoleRuntimeDep, _checked: CheckedForm) -> Response:
    sign_out(runtime, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse(f"{SIGN_IN_PATH}?signed_out=1", status_code=303)
    clear_console_cookie(request, response, SESSION_COOKIE)
    return response
