"""Bearer credentials, read one way: FastAPI's `HTTPBearer`, so the OpenAPI document names them.

Each credential the server takes is one named scheme (an agent's key, the admin token, the mail
providers' token, the metrics scraper's token). `auto_error=False` because a missing or malformed
header is answered by the caller's own problem+json 401, with a hint naming what to send, rather
than by FastAPI's generic 403.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

AGENT_KEY = HTTPBearer(
    auto_error=False,
    scheme_name="agentKey",
    description="An agent's API key, created (and shown once) by `outbox agents create`.",
)
ADMIN_TOKEN = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description="The server's admin token, the value of OUTBOX_ADMIN_TOKEN.",
)
MAIL_EVENTS_TOKEN = HTTPBearer(
    auto_error=False,
    scheme_name="mailEventsToken",
    description="The token mail providers send with feedback, the value of OUTBOX_MAIL_EVENTS_TOKEN.",
)
METRICS_TOKEN = HTTPBearer(
    auto_error=False,
    scheme_name="metricsToken",
    description="The token a Prometheus scraper sends, the value of OUTBOX_METRICS_TOKEN.",
)
SCHEMES = (AGENT_KEY, ADMIN_TOKEN, MAIL_EVENTS_TOKEN, METRICS_TOKEN)

AgentKey = Annotated[HTTPAuthorizationCredentials | None, Depends(AGENT_KEY)]
AdminToken = Annotated[HTTPAuthorizationCredentials | None, Depends(ADMIN_TOKEN)]
MailEventsToken = Annotated[HTTPAuthorizationCredentials | None, Depends(MAIL_EVENTS_TOKEN)]
MetricsToken = Annotated[HTTPAuthorizationCredentials | None, Depends(METRICS_TOKEN)]


def bearer_token(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None (no header, another
    scheme, or nothing after the scheme)."""
    if credentials is None:
        return None
    return credentials.credentials.strip() or None


def token_matches(credentials: HTTPAuthorizationCredentials | None, expected: str) -> bool:
    """Whether the request carries exactly `expected`, compared in constant time."""
    given = bearer_token(credentials)
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
