"""Request dependencies of the console: the runtime, the signed-in person, operators only,
and forms whose CSRF token was checked. The operators' pages (`outbox.console.operate`) use
the same ones; docs/console.md describes the rules they enforce.

Who is signed in is decided by `outbox.users.service` (sessions are rows with an expiry); this
module only reads the cookie, turns "nobody" into a redirect to the sign-in page, and turns a
refused form into a page that says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qsl, quote, urlsplit

from fastapi import Depends, FastAPI, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from outbox.console.security import CONSOLE_PREFIX
from outbox.console.templating import render
from outbox.logs import bind_log_context
from outbox.runtime import Runtime
from outbox.users.schemas import ConsoleUser
from outbox.users.service import check_csrf, session_user

SESSION_COOKIE = "outbox_console_session"
CSRF_FIELD = "csrf_token"
SIGN_IN_PATH = f"{CONSOLE_PREFIX}/sign-in"
# A console form is a few short fields; a deny reason is at most 2000 characters.
MAX_FORM_BYTES = 65_536
_MAX_FORM_FIELDS = 50


class SignInRequired(Exception):
    """Nobody is signed in (or the session has ended): go to the sign-in page, then come back."""

    def __init__(self, next_path: str, *, ended: bool) -> None:
        super().__init__(next_path)
        self.next_path = next_path
        self.ended = ended


class ConsolePageError(Exception):
    """A request the console refuses, answered with an HTML page that says what was wrong and
    what to do instead (the console's counterpart of a problem document)."""

    def __init__(self, status: int, title: str, detail: str, *, hint: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.hint = hint


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


ConsoleRuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def safe_next(path: str | None) -> str:
    """Where to go after signing in: a console path of this server, never another site."""
    if not path or not path.startswith(CONSOLE_PREFIX) or path.startswith(SIGN_IN_PATH):
        return CONSOLE_PREFIX
    if "//" in path or "\\" in path or any(ord(c) < 0x20 for c in path):
        return CONSOLE_PREFIX
    return path


def _return_path(request: Request) -> str:
    """The page to come back to after signing in: the page asked for; for htmx's requests (the
    inbox's polling) the page they were made from, not the fragment; for a form posted after
    the session ended, the page the form was on (a POST path cannot be fetched with GET)."""
    if request.headers.get("hx-request") == "true":
        page = request.headers.get("hx-current-url", "")
    elif request.method in ("GET", "HEAD"):
        return request.url.path + (f"?{request.url.query}" if request.url.query else "")
    else:
        page = request.headers.get("referer", "")
    parts = urlsplit(page)
    if parts.netloc == request.url.netloc:
        return parts.path + (f"?{parts.query}" if parts.query else "")
    return CONSOLE_PREFIX


def current_console_user(request: Request, runtime: ConsoleRuntimeDep) -> ConsoleUser:
    """The signed-in person, or SignInRequired (no cookie, unknown or expired session, user
    disabled since). A plain `def`: the session read runs in the thread pool."""
    token = request.cookies.get(SESSION_COOKIE)
    user = session_user(runtime, token)
    if user is None:
        raise SignInRequired(_return_path(request), ended=bool(token))
    request.state.console_user = user
    bind_log_context(console_user=user.identity)
    return user


ConsoleUserDep = Annotated[ConsoleUser, Depends(current_console_user)]


async def require_operator(user: ConsoleUserDep) -> ConsoleUser:
    """The signed-in person if they are an operator; a 403 page otherwise."""
    if not user.is_operator:
        raise ConsolePageError(
            403,
            "Operators only",
            f"{user.email} signs in as an approver; this page and its actions are for operators.",
            hint="An operator can give you the role with `outbox users add EMAIL --role operator`.",
        )
    return user


OperatorDep = Annotated[ConsoleUser, Depends(require_operator)]


@dataclass(frozen=True)
class ConsoleForm:
    """A submitted form's fields (the first value of each name)."""

    fields: dict[str, str]

    def get(self, name: str) -> str | None:
        return self.fields.get(name)

    def text(self, name: str) -> str:
        return self.fields.get(name, "").strip()

    def checked(self, name: str) -> bool:
        return name in self.fields


async def read_form(request: Request) -> ConsoleForm:
    """An `application/x-www-form-urlencoded` body (what the console's forms and htmx send),
    bounded and decoded strictly; anything else is a 4xx page, never a 500."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise ConsolePageError(
            415, "Not a console form", "The console accepts its own forms only (URL-encoded fields)."
        )
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ConsolePageError(413, "Form too large", f"The form is larger than {MAX_FORM_BYTES} bytes.")
    try:
        pairs = parse_qsl(
            body.decode("ascii"), keep_blank_values=True, max_num_fields=_MAX_FORM_FIELDS, errors="strict"
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConsolePageError(400, "Unreadable form", f"The form could not be read: {exc}.") from exc
    fields: dict[str, str] = {}
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            raise ConsolePageError(400, "Unreadable form", "The form holds a NUL character.")
        fields.setdefault(name, value)
    return ConsoleForm(fields)


async def csrf_checked(request: Request, user: ConsoleUserDep) -> ConsoleForm:
    """The submitted form, once its CSRF token is the session's (every console POST)."""
    form = await read_form(request)
    if not check_csrf(user, form.get(CSRF_FIELD)):
        raise ConsolePageError(
            403,
            "Form refused",
            "The form did not carry this session's CSRF token, so it may not have come from this console "
            "(or it was loaded in a session that has ended). Nothing was done.",
            hint="Go back, reload the page and submit it again.",
        )
    return form


CheckedForm = Annotated[ConsoleForm, Depends(csrf_checked)]


def sign_in_redirect(request: Request, exc: Exception) -> Response:
    """Send the browser to the sign-in page. An htmx request (the inbox's polling) gets
    `HX-Redirect`, so the whole page goes there rather than a sign-in form inside a fragment."""
    assert isinstance(exc, SignInRequired)
    location = f"{SIGN_IN_PATH}?next={quote(safe_next(exc.next_path), safe='/')}" + ("&ended=1" if exc.ended else "")
    if request.headers.get("hx-request") == "true":
        # htmx follows HX-Redirect whatever the status; a 200 keeps an ordinary end of session
        # from showing as a failed request in the browser's console.
        return Response(status_code=200, headers={"HX-Redirect": location})
    return RedirectResponse(location, status_code=303)


def page_error(request: Request, exc: Exception) -> HTMLResponse:
    assert isinstance(exc, ConsolePageError)
    user: ConsoleUser | None = getattr(request.state, "console_user", None)
    return render(
        request,
        "error.html",
        {"title": exc.title, "detail": exc.detail, "hint": exc.hint},
        status_code=exc.status,
        user=user,
        csrf_token=None if user is None else user.csrf_token,
    )


def install_console_errors(app: FastAPI) -> None:
    app.add_exception_handler(SignInRequired, sign_in_redirect)
    app.add_exception_handler(ConsolePageError, page_error)
