"""Errors without HTTP in the core: services raise typed domain errors, the edge maps them once.

The tests read the source tree: only the HTTP and Slack edges may know about FastAPI/Starlette or
raise `Problem`s, and every domain error has a category the edge answers with a status.
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
from pathlib import Path

import pytest

import outbox
from outbox.api.errors import STATUS_BY_CATEGORY, problem_for, problem_response
from outbox.errors import (
    ActionNotCancellable,
    ActionNotFound,
    ApprovalsMisconfigured,
    DomainError,
    IdempotencyKeyInProgress,
    IdempotencyKeyInvalid,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
    InvalidCursor,
    ValidationFailed,
)
from outbox.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE, problem_document

ROOT = Path(outbox.__file__).parent
# The edges: they speak HTTP (or Slack's HTTP, or MCP over HTTP) and may import the web framework.
EDGES = {"outbox/slack/api.py"}
EDGE_PACKAGES = ("outbox/api/", "outbox/mcp/", "outbox/console/", "outbox/replay/")


def is_edge(relative: str) -> bool:
    return relative.startswith(EDGE_PACKAGES) or relative.endswith("/api.py") or relative in EDGES


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules() -> list[tuple[str, set[str]]]:
    return [
        (path.relative_to(ROOT.parent).as_posix(), imported_modules(path))
        for path in sorted(ROOT.rglob("*.py"))
        if "migrations" not in path.parts
    ]


def test_only_the_edges_import_fastapi_or_starlette() -> None:
    offenders = {
        relative: sorted(m for m in imports if m.split(".")[0] in {"fastapi", "starlette"})
        for relative, imports in modules()
        if not is_edge(relative)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_the_edges_raise_http_problems() -> None:
    offenders = [relative for relative, imports in modules() if "outbox.problems.Problem" in imports]
    assert [relative for relative in offenders if not is_edge(relative)] == []


def test_the_problem_builder_does_not_know_about_a_web_framework() -> None:
    assert not {m for m in imported_modules(ROOT / "problems.py") if m.split(".")[0] in {"fastapi", "starlette"}}
    assert not {m for m in imported_modules(ROOT / "errors.py") if m.startswith("outbox")}


def all_domain_errors() -> set[type[DomainError]]:
    for info in pkgutil.walk_packages(outbox.__path__, "outbox."):
        if ".migrations" not in info.name:
            importlib.import_module(info.name)
    seen: set[type[DomainError]] = set()
    pending: list[type[DomainError]] = [DomainError]
    while pending:
        for sub in pending.pop().__subclasses__():
            if sub not in seen:
                seen.add(sub)
                pending.append(sub)
    return {error for error in seen if "type" in vars(error)}


def test_every_concrete_domain_error_has_a_category_the_edge_answers() -> None:
    concrete = all_domain_errors()
    assert ValidationFailed in concrete and ActionNotFound in concrete
    for error in concrete:
        assert error.type and error.title, error
    # status_of falls back to 500 only for an error outside every category.

    categories = tuple(category for category, _ in STATUS_BY_CATEGORY)
    assert [e.__name__ for e in concrete if not issubclass(e, categories)] == []


@pytest.mark.parametrize(
    ("error", "status", "slug", "headers"),
    [
        (ActionNotFound("act_x"), 404, "action-not-found", {}),
        (ActionNotCancellable("act_x", "running"), 409, "action-not-cancellable", {}),
        (InvalidCursor(), 400, "invalid-cursor", {}),
        (ValidationFailed([{"field": "tool", "message": "unknown"}]), 422, "validation-error", {}),
        (IdempotencyKeyMissing(), 400, "idempotency-key-missing", {}),
        (IdempotencyKeyInvalid(), 400, "idempotency-key-invalid", {}),
        (IdempotencyKeyReused("act_y"), 422, "idempotency-key-reused", {}),
        (IdempotencyKeyInProgress(), 409, "idempotency-key-in-progress", {"retry-after": "1"}),
        (ApprovalsMisconfigured(), 503, "approvals-misconfigured", {"retry-after": "60"}),
    ],
)
def test_each_domain_error_is_answered_with_its_status_type_and_retry_after(
    error: DomainError, status: int, slug: str, headers: dict[str, str]
) -> None:
    response = problem_response(problem_for(error))
    body = json.loads(bytes(response.body))

    assert response.status_code == status
    assert response.media_type == PROBLEM_MEDIA_TYPE
    assert body["type"] == PROBLEM_BASE + slug
    assert body["status"] == status
    assert body["title"] == error.title
    assert body["detail"] == error.detail
    assert body["hint"] == error.hint
    assert {k: v for k, v in response.headers.items() if k == "retry-after"} == headers
    assert list(body)[:5] == ["type", "title", "status", "detail", "hint"]


def test_the_action_and_the_fields_travel_with_the_problem() -> None:
    body = problem_for(ActionNotCancellable("act_1", "succeeded")).body()
    assert body["action_id"] == "act_1"
    assert "succeeded" in body["detail"]
    fields = [{"field": "args.url", "message": "not absolute"}]
    assert problem_for(ValidationFailed(fields, hint="Send an absolute URL.")).body()["errors"] == fields
    assert problem_for(ValidationFailed(fields, detail="Callbacks there are not allowed.")).body()["detail"] == (
        "Callbacks there are not allowed."
    )


def test_a_stored_problem_document_has_the_shape_agents_read() -> None:
    document = problem_document(403, "approval-expired", "Approval expired", "Nobody decided.", action_id="act_2")
    assert document == {
        "type": PROBLEM_BASE + "approval-expired",
        "title": "Approval expired",
        "status": 403,
        "detail": "Nobody decided.",
        "action_id": "act_2",
    }
