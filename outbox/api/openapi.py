"""The OpenAPI document describes the API as it really answers, so clients can be generated from it
and schemathesis can hold the server to it (tests/api/test_schemathesis.py).

FastAPI derives paths, parameters and success bodies from the routes. Added here, in one place:

- security: FastAPI lists the credential each operation takes (agent key, admin token, mail
  events token) from the `HTTPBearer` schemes its dependencies read (outbox/api/security.py), so a
  new route cannot be documented with the wrong one; an open operation says `security: []`;
- the body of POST /v1/actions, which the route reads itself (it records the exact bytes): one
  schema per tool of the running policy (`oneOf` with a discriminator on `tool`), so a generated
  client has typed arguments; the document is rebuilt when the policy version changes;
- the headers of POST /v1/actions: `Idempotency-Key` required, and the answers' `Location`,
  `Idempotent-Replayed`, `Preference-Applied` and `Retry-After`;
- every client error as RFC 9457 `application/problem+json` with one `Problem` schema, FastAPI's
  own 422 shape replaced: the statuses every operation can answer (400 for a NUL in the target;
  401 when it takes a credential; 400/413/422 for a JSON body; 404 for a path parameter) plus
  the ones an operation adds (`_EXTRA_STATUSES`). FastAPI's `HTTPValidationError` is gone;
- names a generator turns into code: each operationId is the handler's name (`submit_action`),
  inline response schemas lose FastAPI's "Response Healthz Healthz Get" titles, and schema names
  are plain (tests/api/test_openapi.py keeps them so).

The interactive pages live in outbox/api/docs.py.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import fastapi.routing
from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from outbox.api.docs import install_docs
from outbox.api.errors import http_exception_handler
from outbox.api.openapi_tools import action_create_components
from outbox.canonical import MAX_SAFE_INTEGER
from outbox.toolkit.base import Tool

if TYPE_CHECKING:
    from outbox.policy.store import ActivePolicy  # annotations only: the runtime hands it in

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": (
        "RFC 9457 problem details. `hint` tells an agent what to do instead. Members beyond "
        "`type`, `title`, `status` and `detail` appear where they apply."
    ),
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "A stable URI naming the kind of problem."},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "What was wrong with this request."},
        "hint": {"type": "string", "description": "What to do instead."},
        "action_id": {"type": "string", "description": "The action recorded for this request, if any."},
        "action_status": {
            "type": "string",
            "description": "The status of that action (`denied`, `rejected`, `expired`).",
        },
        "errors": {
            "type": "array",
            "description": "Each invalid field (validation errors).",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
        "decision": {
            "$ref": "#/components/schemas/ActionDecisionOut",
            "description": "A denial: the policy decision, with the rules that decided it.",
        },
        "links": {
            "type": "object",
            "description": "A denial: `action`, the URL of the recorded action.",
            "additionalProperties": {"type": "string"},
        },
        "approver": {"type": "string", "description": "A rejection: the human who rejected the call."},
        "reason": {
            "type": "string",
            "description": "A rejection: the approver's reason. A tool that cannot run here: what is missing.",
        },
        "may_resubmit": {
            "type": ["boolean", "null"],
            "description": "A rejection: whether the approver thinks a changed call may be asked again.",
        },
        "tool": {"type": "string", "description": "A tool that cannot run here: its name."},
        "code": {"type": "string", "description": "A refused approval decision: the machine-readable reason."},
    },
    "additionalProperties": True,
}

_DESCRIPTIONS = {
    400: "Bad request: invalid JSON, a NUL in the URL, or a malformed header or cursor",
    401: "Missing or wrong credential",
    403: "Refused (by policy, or the approver may not decide)",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid request: the `errors` member lists each field",
    503: "Not configured or not ready on this server",
}

_SUBMIT_DESCRIPTIONS = {
    403: "Denied by policy (the action is recorded: `action_id`, `decision`), or rejected by a human "
    "or expired while `Prefer: wait` held the answer",
    409: "A request with the same Idempotency-Key is still being processed: retry after `Retry-After`",
    422: "Invalid arguments (`errors` names each field), or the Idempotency-Key was used for another request",
    503: "The tool cannot run on this server now, or approvals are misconfigured: nothing was recorded "
    "and the key was not used; retry after `Retry-After`",
}

# Statuses an operation answers beyond those every operation of its kind answers.
_EXTRA_STATUSES: dict[tuple[str, str], set[int]] = {
    ("post", "/v1/actions"): {403, 409, 415, 503},
    ("post", "/v1/actions/{action_id}/cancel"): {409},
    ("post", "/v1/admin/policy/reload"): {422},
    ("post", "/v1/admin/policy/shadow/reload"): {404, 422},
    ("get", "/v1/admin/actions/{action_id}"): {404},
    ("get", "/v1/admin/approvals/{ref}"): {404},
    ("post", "/v1/admin/approvals/{ref}/approve"): {403, 409},
    ("post", "/v1/admin/approvals/{ref}/deny"): {403, 409},
    ("get", "/v1/admin/mail"): {404, 422},
    ("post", "/v1/admin/mail/dns-check"): {404, 422},
    ("get", "/v1/admin/mail/suppressions"): {404},
    ("post", "/v1/admin/mail/suppressions"): {404},
    ("post", "/v1/admin/mail/pause"): {404},
    ("post", "/v1/admin/mail/resume"): {404},
    ("post", "/v1/mail/events"): {404, 503},
    ("post", "/v1/mail/dsn"): {404, 413, 415, 422, 503},
    ("post", "/unsubscribe/{token}"): {503},
    ("get", "/unsubscribe/{token}"): {503},
    ("post", "/slack/interactions"): {401, 503},
    ("get", "/readyz"): {503},
}


# Pages for people (a browser opening an unsubscribe link) answer errors as HTML too.
_HTML_ERRORS: dict[tuple[str, str], set[int]] = {("get", "/unsubscribe/{token}"): {400}}


@dataclass(frozen=True, slots=True)
class _Operation:
    path: str
    method: str
    name: str


def _operations(app: FastAPI) -> Iterator[_Operation]:
    """Every documented operation. FastAPI ≥ 0.160 keeps included routers
    as such (`iter_route_contexts` flattens them, with the prefix applied); older ones copy the
    routes into the app."""
    iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    routes: Iterable[Any] = iter_route_contexts(app.routes) if iter_route_contexts else app.routes
    for route in routes:
        original = getattr(route, "original_route", route)
        dependant = getattr(route, "dependant", None)
        if not isinstance(original, APIRoute) or not route.include_in_schema or dependant is None:
            continue
        for method in route.methods or ():
            yield _Operation(route.path_format, method.lower(), route.name)


def _problem_response(status: int, existing: dict[str, Any] | None) -> dict[str, Any]:
    description = (existing or {}).get("description") or _DESCRIPTIONS.get(status, "Client error")
    if status == 422 and description == "Validation Error":
        description = _DESCRIPTIONS[422]
    response = {"description": description, "content": {"application/problem+json": {"schema": PROBLEM_REF}}}
    if existing and "headers" in existing:
        response["headers"] = existing["headers"]
    return response


def _actions_request_body() -> dict[str, Any]:
    return {
        "required": True,
        "description": (
            "I-JSON (RFC 7493): finite numbers within ±(2^53 - 1), no lone surrogates, NUL characters "
            "or duplicate keys. `args` follows the tool's JSON Schema (GET /v1/tools)."
        ),
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/ActionCreate"},
                "example": {
                    "tool": "http.request",
                    "args": {"method": "GET", "url": "http://127.0.0.1:9/v1/orders"},
                    "reason": "Look up the order the customer asked about.",
                },
            }
        },
    }


def _header(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "schema": schema}


_LOCATION = _header("The action's URL (`/v1/actions/{id}`).", {"type": "string"})
_REPLAYED = _header(
    "`true` when this is the answer to a key already used: the action's current state, nothing ran again.",
    {"type": "string", "enum": ["true"]},
)
_PREFERENCE_APPLIED = _header("`wait=N` when `Prefer: wait=N` held the answer.", {"type": "string"})
_RETRY_AFTER = _header("Seconds to wait before asking again.", {"type": "integer", "minimum": 0})

# POST /v1/actions: the response headers of each status (the IETF idempotency-key draft and
# RFC 7240 `Prefer`); none is required, since which apply depends on the request.
_SUBMIT_HEADERS: dict[int, dict[str, Any]] = {
    200: {"Location": _LOCATION, "Idempotent-Replayed": _REPLAYED, "Preference-Applied": _PREFERENCE_APPLIED},
    202: {
        "Location": _LOCATION,
        "Idempotent-Replayed": _REPLAYED,
        "Preference-Applied": _PREFERENCE_APPLIED,
        "Retry-After": _header(
            "A deferred action (a budget, a send window, a host's limit): seconds until `not_before`.",
            {"type": "integer", "minimum": 0},
        ),
    },
    403: {"Location": _LOCATION, "Idempotent-Replayed": _REPLAYED, "Preference-Applied": _PREFERENCE_APPLIED},
    409: {"Retry-After": _RETRY_AFTER},
    503: {"Retry-After": _RETRY_AFTER},
}

_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": (
        "One key per logical call (a UUID will do), reused only to retry that same call: a retry "
        "gets the action as it is now and never runs it twice (draft-ietf-httpapi-idempotency-key-header). "
        "Printable ASCII, 1 to 255 characters."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}
_PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "description": (
        "`wait=N` (RFC 7240; N capped by the server, 60 by default): hold the answer until the action "
        "is settled for now (terminal, decided by a human, or deferred) or N seconds pass."
    ),
    "schema": {"type": "string"},
}


def _document_submit(operation: dict[str, Any]) -> None:
    """POST /v1/actions: the body, its two request headers, its statuses and response headers."""
    operation["requestBody"] = _actions_request_body()
    documented = {"Idempotency-Key": _IDEMPOTENCY_KEY, "prefer": _PREFER, "Prefer": _PREFER}
    operation["parameters"] = [
        documented.get(p["name"], p) if p["in"] == "header" else p for p in operation.get("parameters", [])
    ]
    responses: dict[str, Any] = operation["responses"]
    responses["200"] = {
        "description": (
            "The action is terminal (succeeded, failed, cancelled): `Prefer: wait` held the answer "
            "until it was, or the Idempotency-Key was used before and the action has finished since"
        ),
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ActionOut"}}},
    }
    responses["202"]["description"] = (
        "The action is recorded and will run, is waiting for a human, or is deferred (`not_before`, "
        "`Retry-After`); a replayed key answers the same while the action is still pending"
    )
    for status, description in _SUBMIT_DESCRIPTIONS.items():
        responses[str(status)] = _problem_response(status, {"description": description})
    for status, headers in _SUBMIT_HEADERS.items():
        responses[str(status)]["headers"] = headers


def _document_operation(route: _Operation, operation: dict[str, Any]) -> None:
    method = route.method
    statuses = {400} | _EXTRA_STATUSES.get((method, route.path), set())
    # FastAPI lists the bearer schemes (outbox/api/security.py) each operation depends on; an
    # operation without one is open, said explicitly so a client does not assume a global default.
    if operation.get("security"):
        statuses.add(401)
    else:
        operation["security"] = []
    if (method, route.path) == ("post", "/v1/actions"):
        _document_submit(operation)
    if (method, route.path) == ("get", "/v1/actions"):
        # The route takes a string and refuses any other value than a status (422): say which.
        for parameter in operation.get("parameters", []):
            if parameter["name"] == "status":
                parameter["schema"] = {"$ref": "#/components/schemas/ActionStatus"}
    if "requestBody" in operation:
        statuses |= {400, 413, 422}
    html_errors = _HTML_ERRORS.get((method, route.path), set())
    parameters = operation.get("parameters", [])
    if parameters:
        statuses.add(422)
    if any(p["in"] == "path" for p in parameters):
        statuses.add(404)
    responses: dict[str, Any] = operation["responses"]
    for status in sorted(statuses - html_errors):
        responses[str(status)] = _problem_response(status, responses.get(str(status)))
    for status in html_errors:
        responses[str(status)] = {
            "description": _DESCRIPTIONS[status],
            "content": {"text/html": {"schema": {"type": "string"}}},
        }


def build_openapi(app: FastAPI, tools: Mapping[str, Tool] | None = None) -> dict[str, Any]:
    """The document, with the body of POST /v1/actions described for `tools` (outbox/api/openapi_tools.py)."""
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=(
            "Every client error is `application/problem+json` (RFC 9457). Request bodies are I-JSON "
            f"(RFC 7493): numbers finite and within ±{MAX_SAFE_INTEGER}, strings Unicode without NUL, "
            "keys unique. Numeric query parameters are bounded (minimum and maximum below)."
        ),
        routes=app.routes,
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    # FastAPI's 422 shapes are never sent: every error is a Problem.
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Problem"] = PROBLEM_SCHEMA
    schemas.update(action_create_components(tools, set(schemas)))
    routes = list(_operations(app))
    names = Counter(route.name for route in routes)
    for route in routes:
        operation = schema["paths"].get(route.path, {}).get(route.method)
        if operation is not None:
            _document_operation(route, operation)
            # Generated clients name their functions after operationId: the handler's name
            # (`submit_action`) rather than FastAPI's `submit_action_v1_actions_post`.
            if names[route.name] == 1:
                operation["operationId"] = route.name
            _drop_generated_titles(operation)
    components["schemas"] = dict(sorted(schemas.items()))
    return schema


def _drop_generated_titles(operation: dict[str, Any]) -> None:
    """FastAPI titles an inline response schema after the operation ("Response Healthz Healthz
    Get"), which generators turn into class names; without one they use the operation's name."""
    for response in operation["responses"].values():
        for media in response.get("content", {}).values():
            schema = media.get("schema", {})
            if str(schema.get("title", "")).startswith("Response "):
                del schema["title"]


def _path_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "$")


def documented_methods(schema: dict[str, Any], path: str) -> list[str]:
    """The methods the document lists for every path template `path` matches."""
    methods: set[str] = set()
    for template, operations in schema.get("paths", {}).items():
        if _path_pattern(template).match(path):
            methods.update(m.upper() for m in operations if m in _HTTP_METHODS)
    return sorted(methods)


_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


class _DocumentCache:
    """One document per policy version: the tools, and so the body of POST /v1/actions, change
    with the policy; everything else is fixed once the routes are. Only the latest is kept."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._version: str | None = None
        self._document: dict[str, Any] | None = None

    def get(self) -> dict[str, Any]:
        # Set at startup (outbox/api/app.py); a document asked for before that has no tools.
        runtime = getattr(self.app.state, "runtime", None)
        policy: ActivePolicy | None = runtime.policy.current if runtime is not None else None
        version = policy.version if policy is not None else None
        document = self._document
        if document is None or version != self._version:
            document = build_openapi(self.app, policy.tools if policy is not None else None)
            # Two requests racing here build the same document; the last assignment wins.
            self._version, self._document = version, document
            self.app.openapi_schema = document
        return document


def install_openapi(app: FastAPI) -> None:
    cache = _DocumentCache(app)

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        # Starlette's 405 names the methods of the first route that matched the path only; RFC 9110
        # §15.5.6 wants every method the resource supports (GET and POST on /v1/actions).
        response = await http_exception_handler(request, exc)
        methods = documented_methods(cache.get(), request.url.path)
        if methods:
            response.headers["Allow"] = ", ".join(methods)
        return response

    app.openapi = cache.get  # type: ignore[method-assign]
    app.add_exception_handler(405, method_not_allowed)
    install_docs(app)
