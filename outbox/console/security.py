"""What every console response carries, and how the console's cookies are set.

The console shows agents' e-mail HTML and command output to people who can approve them, so a
page must never run anything it did not ship: the Content-Security-Policy allows scripts and
styles from the console's own static files only (no inline code, no `eval`), no remote images
(an e-mail preview cannot call home), and no framing of the console by another site. The
sandboxed `srcdoc` iframe that shows an e-mail inherits this policy (CSP 3, "policy container").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONSOLE_PREFIX = "/console"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "form-action 'self'",
        "frame-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # For browsers older than frame-ancestors.
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


class ConsoleSecurityHeaders:
    """ASGI middleware: the security headers on every response under /console, error pages and
    redirects included. Pure ASGI (not BaseHTTPMiddleware), so streamed responses pass through
    untouched; other paths are not looked at."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                # A route may set its own policy (the e-mail preview frame sets a stricter
                # one); everything else gets the console's.
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
                # Pages hold approval details and CSRF tokens: never cached. Static assets set
                # their own Cache-Control.
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def is_loopback_http(request: Request) -> bool:
    """Plain http from this machine (a developer's browser on 127.0.0.1): the one case where a
    cookie cannot be `Secure`, because the browser would never send it back."""
    if request.url.scheme != "http" or request.client is None:
        return False
    try:
        return ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return request.client.host == "localhost"


def set_console_cookie(request: Request, response: Response, name: str, value: str, *, max_age: int | None) -> None:
    """A console cookie: HttpOnly (no script reads it), SameSite=Lax (not sent on cross-site
    POSTs), scoped to /console, and Secure unless the request came over loopback http."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=CONSOLE_PREFIX,
        httponly=True,
        samesite="lax",
        secure=not is_loopback_http(request),
    )


def clear_console_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name, path=CONSOLE_PREFIX, httponly=True, samesite="lax", secure=not is_loopback_http(request)
    )
