"""What the sync and async clients share: building requests and reading answers, without I/O.

Both clients run the same loop (send, decide whether to retry, sleep, send again); only the
sending and the sleeping differ. Everything else lives here once, so the two cannot drift.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from outbox.client.errors import OutboxError, Problem, TransportFailed, error_for
from outbox.client.models import Action, ActionPage, ToolDefinition
from outbox.client.retries import RetryPolicy, parse_retry_after

log = logging.getLogger("outbox.client")

DEFAULT_URL = "http://127.0.0.1:8000"
USER_AGENT = "agent-outbox-client/0.1"
# The statuses whose answer carries the action (200 terminal or waited for, 202 accepted).
_ACTION_STATUSES = (200, 202)
# Outcomes that the agent hears as an error even when they arrive as an action (a GET of a denied
# or rejected action, or a replay that answers with the action's current representation).
_REFUSED_STATUSES = frozenset({"denied", "rejected", "expired"})


def base_url(url: str | None) -> str:
    return (url or os.environ.get("OUTBOX_URL") or DEFAULT_URL).rstrip("/")


def api_key(key: str | None) -> str:
    found = key or os.environ.get("OUTBOX_API_KEY")
    if not found:
        raise ValueError("no API key: pass api_key=, or set OUTBOX_API_KEY (`outbox agents create` prints one)")
    return found


def new_idempotency_key() -> str:
    """One key per logical call: random, so two calls never share one by accident."""
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request, ready to send as many times as the retry policy allows."""

    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Extra seconds of read timeout: the server holds `Prefer: wait=N` answers for up to N seconds.
    extra_read_seconds: float = 0.0
    idempotency_key: str | None = None


def action_path(action_id: str) -> str:
    return "/v1/actions/" + quote(action_id, safe="")


def log_retry(request: Request, cause: str, delay: float) -> None:
    # INFO, not WARNING: a retried answer is the client doing its job; the final error is raised.
    log.info("outbox: %s %s: %s; retrying in %.2fs", request.method, request.path, cause, delay)


def submit_request(
    tool: str,
    args: Mapping[str, Any] | None,
    *,
    on_behalf_of: str | None,
    reason: str | None,
    wait: int | None,
    idempotency_key: str | None,
    callback_url: str | None,
) -> Request:
    key = idempotency_key or new_idempotency_key()
    body: dict[str, Any] = {"tool": tool, "args": dict(args or {})}
    if on_behalf_of is not None:
        body["on_behalf_of"] = on_behalf_of
    if reason is not None:
        body["reason"] = reason
    if callback_url is not None:
        body["callback_url"] = callback_url
    headers = {"Idempotency-Key": key}
    if wait is not None:
        if wait < 0:
            raise ValueError("wait is a number of seconds, 0 or more")
        headers["Prefer"] = f"wait={wait}"
    return Request(
        "POST", "/v1/actions", json=body, headers=headers, extra_read_seconds=float(wait or 0), idempotency_key=key
    )


def timeout_for(request: Request, timeout: httpx.Timeout) -> httpx.Timeout:
    if not request.extra_read_seconds or timeout.read is None:
        return timeout
    return httpx.Timeout(
        connect=timeout.connect, read=timeout.read + request.extra_read_seconds, write=timeout.write, pool=timeout.pool
    )


def retry_delay(response: httpx.Response, policy: RetryPolicy, attempt: int) -> float | None:
    """Seconds to wait before sending again, or None when this answer is final."""
    if response.status_code not in policy.statuses:
        return None
    if response.status_code == 409 and _problem(response).slug != "idempotency-key-in-progress":
        return None  # another conflict (not cancellable, …): sending again cannot change it
    return policy.delay(attempt, parse_retry_after(response.headers.get("retry-after")))


def transport_failure(request: Request, exc: httpx.TransportError, attempts: int) -> TransportFailed:
    problem = Problem(
        type="about:blank",
        title="Outbox unreachable",
        status=0,
        detail=f"No answer from the outbox after {attempts} attempt(s): {type(exc).__name__}: {exc}".rstrip(": "),
        hint=(
            f"Send the same call again with idempotency_key={request.idempotency_key!r}: if the outbox recorded "
            "it, you get the recorded action, and nothing runs twice."
            if request.idempotency_key
            else "Check that the outbox is running at this URL, then try again."
        ),
    )
    return TransportFailed(problem, idempotency_key=request.idempotency_key)


def _problem(response: httpx.Response) -> Problem:
    try:
        document = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        document = None
    if not isinstance(document, dict):
        # Not the outbox's own answer (a proxy's HTML page, an empty body): say what came back.
        text = response.text[:200].strip()
        return Problem(
            title=response.reason_phrase or f"HTTP {response.status_code}",
            status=response.status_code,
            detail=f"HTTP {response.status_code} {response.reason_phrase}" + (f": {text}" if text else ""),
        )
    return Problem.of(document, response.status_code)


def error(response: httpx.Response, request: Request | None = None) -> OutboxError:
    return error_for(
        _problem(response),
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        idempotency_key=request.idempotency_key if request else None,
    )


def read_json(response: httpx.Response, request: Request | None = None) -> dict[str, Any]:
    """The body of a 2xx answer, or the typed error of any other."""
    if not 200 <= response.status_code < 300:
        raise error(response, request)
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        # Something between us and the outbox answered (a captive portal, a misrouted proxy).
        raise OutboxError(
            Problem(
                title="Not an outbox answer",
                status=response.status_code,
                detail=f"HTTP {response.status_code} with a body that is not a JSON object: {response.text[:200]!r}",
                hint='Check that the base URL points at the outbox (GET /healthz answers {"status": "ok"}).',
            )
        )
    return body


def read_action(response: httpx.Response, request: Request | None = None) -> Action:
    """The action an answer carries, marked with what the headers say (replayed, Retry-After)."""
    if response.status_code not in _ACTION_STATUSES:
        raise error(response, request)
    body = read_json(response, request)
    body["replayed"] = response.headers.get("idempotent-replayed", "").lower() == "true"
    body["retry_after"] = parse_retry_after(response.headers.get("retry-after"))
    return Action.model_validate(body)


def raise_if_refused(action: Action, idempotency_key: str | None = None) -> Action:
    """Denied, rejected and expired actions raise their problem, however they were read: a 403, a
    replay answering the current representation, or a GET after a human decided."""
    if action.status in _REFUSED_STATUSES and action.problem:
        raise error_for(Problem.of(action.problem, 403), idempotency_key=idempotency_key)
    return action


def read_page(response: httpx.Response) -> ActionPage:
    return ActionPage.model_validate(read_json(response))


def read_tools(response: httpx.Response, *, all_tools: bool) -> list[ToolDefinition]:
    body = read_json(response)
    tools = [ToolDefinition.model_validate(entry) for entry in body.get("tools", [])]
    # Servers that mark tools list only callable ones unless asked; older servers list all.
    return tools if all_tools else [t for t in tools if t.is_callable is not False]


def list_request(status: str | None, tool: str | None, limit: int, cursor: str | None) -> Request:
    params = {"limit": str(limit)}
    if status is not None:
        params["status"] = status
    if tool is not None:
        params["tool"] = tool
    if cursor is not None:
        params["cursor"] = cursor
    return Request("GET", "/v1/actions", params=params)


def tools_request(all_tools: bool) -> Request:
    return Request("GET", "/v1/tools", params={"all": "true"} if all_tools else None)
