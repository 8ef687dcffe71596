"""The OpenAPI document describes the API as it really answers, so clients can be generated from it
and schemathesis can hold the server to it (tests/api/test_schemathesis.py).

FastAPI derives paths, parameters and success bodies from the routes. Added here, in one place:

- security: FastAPI lists the credential each operation takes (agent key, admin token, mail
  events token) from the `HTTPBearer` schemes its dependencies read (outbox/api/security.py), so a
  new route cannot be documented with the wrong one; an open operation says `security: []`;
- the body of POST /v1/actions, which the route reads itself (it records the exact bytes);
- every client error as RFC 9457 `application/problem+json` with one `Problem` schema, FastAPI's
  own 422 shape replaced: the statuses every operation can answer (400 for a NUL in the target;
  401 when it takes a credential; 400/413/422 for a JSON body; 404 for a path parameter) plus
  the ones an operation adds (`_EXTRA_STATUSES`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import fastapi.routing
from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from outbox.actions.schemas import ActionCreate
from outbox.api.errors import http_exception_handler
from outbox.canonical import MAX_SAFE_INTEGER

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details. `hint` tells an agent what to do instead.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "A stable URI naming the kind of problem."},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "What was wrong with this request."},
        "hint": {"type": "string", "description": "What to do instead."},
        "action_id": {"type": "string", "description": "The action recorded for this request, if any."},
        "errors": {
            "type": "array",
            "description": "Each invalid field (validation errors).",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
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

# Statuses an operation answers beyond those every operation of its kind answers.
_EXTRA_STATUSES: dict[tuple[str, str], set[int]] = {
    ("post", "/v1/actions"): {403, 409, 415},
    ("post", "/v1/actions/{action_id}/cancel"): {409},
    ("post", "/v1/admin/policy/reload"): {422},
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
            yield _Operation(route.path_format, method.lower())


def _problem_response(status: int, existing: dict[str, Any] | None) -> dict[str, Any]:
    description = (existing or {}).get("description") or _DESCRIPTIONS.get(status, "Client error")
    if status == 422 and description == "Validation Error":
        description = _DESCRIPTIONS[422]
    return {"description": description, "content": {"application/problem+json": {"schema": PROBLEM_REF}}}


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
        operation["requestBody"] = _actions_request_body()
        for parameter in operation.get("parameters", []):
            if parameter["name"] == "Idempotency-Key":
                parameter["required"] = True
                parameter["schema"] = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}
        operation["responses"]["200"] = {
            "description": "The action reached a terminal state within `Prefer: wait`",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ActionOut"}}},
        }
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


def build_openapi(app: FastAPI) -> dict[str, Any]:
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
    schemas["Problem"] = PROBLEM_SCHEMA
    action_create = ActionCreate.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(action_create.pop("$defs", {}))
    schemas["ActionCreate"] = action_create
    # FastAPI's 422 shapes are never sent: every error is a Problem.
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    for route in _operations(app):
        operation = schema["paths"].get(route.path, {}).get(route.method)
        if operation is not None:
            _document_operation(route, operation)
    return schema


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


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        # Starlette's 405 names the methods of the first route that matched the path only; RFC 9110
        # §15.5.6 wants every method the resource supports (GET and POST on /v1/actions).
        response = await http_exception_handler(request, exc)
        methods = documented_methods(openapi(), request.url.path)
        if methods:
            response.headers["Allow"] = ", ".join(methods)
        return response

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_exception_handler(405, method_not_allowed)
