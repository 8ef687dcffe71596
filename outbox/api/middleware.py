"""Request context: a request id on every log line and response, one access line, HTTP metrics.

The id comes from the caller's `X-Request-ID` when it is a sane token (so a proxy's or an agent
framework's id ties their logs to ours), otherwise it is generated. It is returned in the
`X-Request-ID` response header. The agent and action id join the context once the request has
authenticated and recorded an action (`outbox.logs.bind_log_context`), so the access line and
everything logged during the request carry them.

A plain ASGI middleware rather than `BaseHTTPMiddleware`: it does not buffer bodies or run the
app in another task, and `Prefer: wait` requests are held for up to a minute.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outbox import metrics
from outbox.logs import log_context

log = structlog.get_logger("outbox.access")

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
# Health checks and scrapes arrive every few seconds from every probe: count them, do not log them.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    # Unmatched paths are not labels: a scanner would create one series per probe.
    return path if isinstance(path, str) else "unmatched"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get(REQUEST_ID_HEADER)
        request_id = incoming if incoming and _SANE_ID.match(incoming) else uuid.uuid4().hex
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with log_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                method = str(scope.get("method", ""))
                path = str(scope.get("path", ""))
                metrics.observe_http(method, _route_template(scope), status, elapsed)
                if path not in _QUIET_PATHS or status >= 500:
                    log.info(
                        "http.request",
                        method=method,
                        path=path,
                        status=status,
                        duration_ms=round(elapsed * 1000, 2),
                    )
