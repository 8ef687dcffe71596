"""Client input rules that hold for every endpoint, checked before any route runs.

- The request target: a NUL in the path or a query value (`%00`) is refused with 400; PostgreSQL
  cannot compare or store one, so it would otherwise surface as a 500 in whichever query used it.
- Every JSON request body is read and parsed here, once, by the rules of `outbox.canonical`.

An ASGI middleware rather than per-route parsing so that no endpoint (the agent contract, the
admin and approvals APIs, mail feedback, and endpoints added later) can parse JSON more leniently
than the rest: a body declared as JSON that holds `NaN`, `1e400`, a lone surrogate, an integer
beyond ±(2^53 − 1), a NUL or duplicate keys is answered 400/422 problem+json before any route,
and so before anything is recorded. The body is bounded by OUTBOX_MAX_REQUEST_BYTES (413).

The parsed value rides in the ASGI scope (`parsed_body` reads it), so POST /v1/actions uses it
without parsing again; FastAPI's own parse for pydantic bodies reads the same, already checked
bytes, which are replayed to the route unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outbox.api.errors import problem_for, problem_response
from outbox.canonical import JSONInputError, loads_strict
from outbox.errors import ValidationFailed
from outbox.problems import Problem

_SCOPE_KEY = "outbox.json_body"
DEFAULT_MAX_BYTES = 1_048_576


@dataclass(frozen=True, slots=True)
class ParsedBody:
    value: Any
    text: str


def declares_json(content_type: str | None) -> bool:
    """`application/json` and the `application/*+json` family (RFC 6839), parameters ignored."""
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def too_large(limit: int) -> Problem:
    return Problem(
        413,
        "request-too-large",
        "Request body too large",
        f"The request body exceeds {limit} bytes.",
        hint="Send smaller arguments; large payloads belong in storage the tool reads, not in the call.",
    )


def json_input_problem(error: JSONInputError) -> Problem:
    """400 when the body is not JSON at all; 422 naming each value the outbox does not hold."""
    if error.not_json:
        where = "; ".join(f"{p.message} (at {p.path})" if p.path != "body" else p.message for p in error.problems)
        return Problem(
            400,
            "invalid-json",
            "Invalid JSON",
            f"The body is not valid JSON: {where}.",
            hint="Send UTF-8 JSON (RFC 8259); numbers must be finite, so send null or a string instead of NaN.",
        )
    return problem_for(
        ValidationFailed(
            [{"field": p.path, "message": p.message} for p in error.problems],
            hint=(
                "Request bodies must be I-JSON (RFC 7493): finite numbers, integers within ±(2^53 - 1) "
                "(send larger ones as strings), Unicode text without lone surrogates or NUL, unique keys. "
                "Fix the listed fields and send the request again."
            ),
        )
    )


def parse_body(raw: bytes) -> ParsedBody:
    """Parse raw bytes by the strict rules, answering a problem when they are refused."""
    try:
        value = loads_strict(raw)
    except JSONInputError as error:
        raise json_input_problem(error) from error
    return ParsedBody(value, raw.decode("utf-8"))


def parsed_body(request: Request) -> ParsedBody | None:
    """The body the middleware parsed, if the request declared JSON and had one."""
    parsed = request.scope.get(_SCOPE_KEY)
    return parsed if isinstance(parsed, ParsedBody) else None


def _limit(scope: Scope) -> int:
    runtime = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
    settings = getattr(runtime, "settings", None)
    limit = getattr(settings, "max_request_bytes", None)
    return limit if isinstance(limit, int) else DEFAULT_MAX_BYTES


async def read_limited(receive: Receive, headers: Headers, limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _target_problem(scope: Scope) -> Problem | None:
    query = scope.get("query_string", b"").decode("latin-1")
    if "\x00" in str(scope.get("path", "")) or "\x00" in unquote_plus(query):
        return Problem(
            400,
            "invalid-request-target",
            "NUL in the request target",
            "The path or a query parameter contains a NUL character (%00), which no identifier or filter holds.",
            hint="Remove the %00 from the URL.",
        )
    return None


class ClientInputMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        target_problem = _target_problem(scope)
        if target_problem is not None:
            await problem_response(target_problem)(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not declares_json(headers.get("content-type")):
            await self.app(scope, receive, send)
            return
        try:
            raw = await read_limited(receive, headers, _limit(scope))
            if raw:
                scope[_SCOPE_KEY] = parse_body(raw)
        except Problem as problem:
            await problem_response(problem)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
