"""The one mapping from errors to HTTP answers: every one of them is problem+json.

Domain errors (`outbox/errors.py`) carry no status; their category decides it here. `Problem`s
raised by the edges carry their own. FastAPI's validation errors, Starlette's 404/405 and any
unexpected exception are answered in the same shape, so a client parses one kind of error.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from outbox.errors import Conflict, DomainError, Invalid, Malformed, NotFound, Unavailable, ValidationFailed
from outbox.problems import PROBLEM_MEDIA_TYPE, Problem, pydantic_errors

# Most specific first: an error is answered with the status of the first category it belongs to.
STATUS_BY_CATEGORY: tuple[tuple[type[DomainError], int], ...] = (
    (Malformed, 400),
    (NotFound, 404),
    (Conflict, 409),
    (Invalid, 422),
    (Unavailable, 503),
)


def status_of(error: DomainError) -> int:
    for category, status in STATUS_BY_CATEGORY:
        if isinstance(error, category):
            return status
    # A DomainError outside every category is a refusal the server could not classify: our bug.
    return 500


def problem_for(error: DomainError) -> Problem:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    return Problem(
        status_of(error),
        error.type,
        error.title,
        error.detail,
        hint=error.hint,
        action_id=error.action_id,
        headers=headers,
        **error.extra,
    )


def problem_response(problem: Problem) -> JSONResponse:
    return JSONResponse(
        problem.body(), status_code=problem.status, headers=problem.headers or None, media_type=PROBLEM_MEDIA_TYPE
    )


async def problem_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(exc)


async def domain_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return problem_response(problem_for(exc))


async def request_validation_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return problem_response(problem_for(ValidationFailed(pydantic_errors(exc.errors()))))


async def http_exception_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    hints = {
        404: "Check the URL; GET /v1/tools lists the tools and /docs the endpoints.",
        405: "Use one of the methods listed in the Allow header.",
    }
    problem = Problem(
        exc.status_code,
        slug,
        str(exc.detail),
        str(exc.detail),
        hint=hints.get(exc.status_code),
        headers=dict(exc.headers or {}),
    )
    return problem_response(problem)


async def unhandled_handler(request: Request, _exc: Exception) -> JSONResponse:
    # Client input never reaches here by design; if it does, it is our bug, not the client's.
    takes_key = request.method == "POST" and request.url.path == "/v1/actions"
    return problem_response(
        Problem(
            500,
            "internal-error",
            "Internal error",
            "The outbox failed while handling this request; nothing was executed by this request.",
            hint=(
                "Retry with the same Idempotency-Key: a recorded action will be returned, not duplicated."
                if takes_key
                else "Retry the request later; if it keeps failing, tell the operator the X-Request-ID of the answer."
            ),
        )
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, problem_handler)
    app.add_exception_handler(DomainError, domain_error_handler)
    app.add_exception_handler(RequestValidationError, request_validation_handler)
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)
    app.add_exception_handler(Exception, unhandled_handler)
