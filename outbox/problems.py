"""RFC 9457 problem details: the one way every client error is built.

Each problem has a stable `type` URI under PROBLEM_BASE, a human `title`/`detail`, and a `hint`
written for agents (an LLM reads it): what to do instead.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_BASE = "https://agent-outbox.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """An error answered to the client as problem+json."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        hint: str | None = None,
        action_id: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.hint = hint
        self.action_id = action_id
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.hint is not None:
            body["hint"] = self.hint
        if self.action_id is not None:
            body["action_id"] = self.action_id
        body.update(self.extra)
        return body

    def response(self) -> JSONResponse:
        return problem_response(self.status, self.body(), self.headers)


def problem_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def validation_problem(errors: list[dict[str, Any]], *, hint: str | None = None) -> Problem:
    """422 listing each offending field as `{"field": "args.to[0]", "message": …}`."""
    fields = ", ".join(e["field"] for e in errors) or "the request"
    return Problem(
        422,
        "validation-error",
        "Invalid request",
        f"The request has {len(errors)} invalid field(s): {fields}.",
        # Not every endpoint takes an Idempotency-Key: callers that do pass their own hint.
        hint=hint or "Fix the listed fields and send the request again.",
        errors=errors,
    )


def pydantic_errors(errors: Any, prefix: str = "") -> list[dict[str, Any]]:
    """Flatten pydantic's error list into `field`/`message` pairs agents can act on."""
    result: list[dict[str, Any]] = []
    for error in errors:
        parts: list[str] = [prefix] if prefix else []
        for loc in error.get("loc", ()):
            if loc in ("body",) and not parts:
                continue
            if isinstance(loc, int):
                parts[-1:] = [f"{parts[-1]}[{loc}]"] if parts else [f"[{loc}]"]
            else:
                parts.append(str(loc))
        result.append({"field": ".".join(parts) or "body", "message": str(error.get("msg", "invalid"))})
    return result


async def problem_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return exc.response()


async def request_validation_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_problem(pydantic_errors(exc.errors())).response()


async def http_exception_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    hints = {
        404: "Check the URL; GET /v1/tools lists the tools and /docs the endpoints.",
        405: "Use one of the methods listed in the Allow header.",
    }
    return problem_response(
        exc.status_code,
        Problem(exc.status_code, slug, str(exc.detail), str(exc.detail), hint=hints.get(exc.status_code)).body(),
        dict(exc.headers or {}),
    )


async def unhandled_handler(request: Request, _exc: Exception) -> JSONResponse:
    # Client input never reaches here by design; if it does, it is our bug, not the client's.
    takes_key = request.method == "POST" and request.url.path == "/v1/actions"
    return Problem(
        500,
        "internal-error",
        "Internal error",
        "The outbox failed while handling this request; nothing was executed by this request.",
        hint=(
            "Retry with the same Idempotency-Key: a recorded action will be returned, not duplicated."
            if takes_key
            else "Retry the request later; if it keeps failing, tell the operator the X-Request-ID of the answer."
        ),
    ).response()
