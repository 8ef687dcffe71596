"""RFC 9457 problem details: the one place a problem document is built.

Each problem has a stable `type` URI under PROBLEM_BASE, a human `title`/`detail`, and a `hint`
written for agents (an LLM reads it): what to do instead. Services raise typed errors
(`outbox/errors.py`) and never build these themselves, except for the documents kept on an
action for the agent to read later (a denial, a rejection, an expiry), which they build with
`problem_document`. The HTTP edge (`outbox/api/errors.py`) turns both into responses; nothing
here knows about a web framework.
"""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://agent-outbox.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_document(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    hint: str | None = None,
    action_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The JSON body: type, title, status, detail, then hint and action_id when set, then `extra`."""
    body: dict[str, Any] = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail}
    if hint is not None:
        body["hint"] = hint
    if action_id is not None:
        body["action_id"] = action_id
    body.update(extra)
    return body


class Problem(Exception):
    """An error answered to the client as problem+json, raised by the edges (HTTP, Slack)."""

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
        return problem_document(
            self.status, self.slug, self.title, self.detail, hint=self.hint, action_id=self.action_id, **self.extra
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
