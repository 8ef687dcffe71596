"""Domain errors: what a service raises when it refuses a request, without knowing about HTTP.

Each error names a stable `type` slug (the problem type an agent may branch on), a `title`, a
`detail` saying what was wrong and a `hint` saying what to do instead. Which HTTP status an
error is answered with is the edge's business: it follows from the error's *category* (the
base class below: NotFound, Conflict, Invalid, Malformed, Unavailable), and the one mapping in
`outbox/api/errors.py` turns any DomainError into problem+json. The CLI and Slack faces print
the same detail and hint.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ActionNotCancellable",
    "ActionNotFound",
    "ApprovalsMisconfigured",
    "Conflict",
    "DomainError",
    "IdempotencyKeyInProgress",
    "IdempotencyKeyInvalid",
    "IdempotencyKeyMissing",
    "IdempotencyKeyReused",
    "Invalid",
    "InvalidCursor",
    "Malformed",
    "NotFound",
    "ToolUnavailable",
    "Unavailable",
    "ValidationFailed",
]


class DomainError(Exception):
    """A refusal the caller can act on. Subclasses set `type` and `title`; `extra` fields
    (JSON values) travel to the client next to detail and hint."""

    type: ClassVar[str]
    title: ClassVar[str]

    def __init__(
        self,
        detail: str,
        *,
        hint: str | None = None,
        action_id: str | None = None,
        retry_after: int | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.hint = hint
        # The action the refusal is about, when one was recorded: the agent can GET it.
        self.action_id = action_id
        # Seconds after which the same request may succeed (the edge sends it as Retry-After).
        self.retry_after = retry_after
        self.extra = extra


# Categories: the edge answers each with one status.


class NotFound(DomainError):
    """The thing named does not exist for this caller."""


class Conflict(DomainError):
    """The request is valid but the current state does not allow it."""


class Invalid(DomainError):
    """The request is well-formed but some of its fields are wrong."""


class Malformed(DomainError):
    """The request itself cannot be read (a header, a cursor, a token the server never issued)."""


class Unavailable(DomainError):
    """The outbox cannot serve this now; the same request may succeed later."""


# Errors more than one domain raises.


class ValidationFailed(Invalid):
    """Fields the caller must fix, each as `{"field": "args.to[0]", "message": …}`."""

    type = "validation-error"
    title = "Invalid request"

    def __init__(self, errors: list[dict[str, Any]], *, hint: str | None = None, detail: str | None = None) -> None:
        fields = ", ".join(e["field"] for e in errors) or "the request"
        super().__init__(
            detail or f"The request has {len(errors)} invalid field(s): {fields}.",
            # Not every endpoint takes an Idempotency-Key: callers that do pass their own hint.
            hint=hint or "Fix the listed fields and send the request again.",
            errors=errors,
        )
        self.errors = errors


# Actions (the agent contract). They live here rather than in `outbox/actions/` so that the
# foundation's error vocabulary is importable by every layer without importing a domain.


class ActionNotFound(NotFound):
    type = "action-not-found"
    title = "Action not found"

    def __init__(self, action_id: str) -> None:
        super().__init__(
            f"No action {action_id!r} for this agent.",
            hint="Use the id returned by POST /v1/actions; GET /v1/actions lists your actions.",
        )


class ActionNotCancellable(Conflict):
    type = "action-not-cancellable"
    title = "Action cannot be cancelled"

    def __init__(self, action_id: str, status: str) -> None:
        super().__init__(
            f"The action is {status}; only queued, deferred or awaiting_approval actions can be cancelled.",
            hint="A running action cannot be stopped; GET the action to see its outcome.",
            action_id=action_id,
        )


class InvalidCursor(Malformed):
    type = "invalid-cursor"
    title = "Invalid cursor"

    def __init__(self) -> None:
        super().__init__(
            "The cursor is not one this server issued.",
            hint="Pass next_cursor from a previous page unchanged, or omit it to start over.",
        )


class ToolUnavailable(Unavailable):
    """The tool cannot run on this server now (no usable sandbox, a secret or mount missing).
    Refused before anything is recorded, so the same Idempotency-Key works once it is fixed."""

    type = "tool-unavailable"
    title = "Tool unavailable on this server"
    # Fixing the server takes an operator: asking again every second would not help.
    RETRY_AFTER_SECONDS: ClassVar[int] = 60

    def __init__(self, tool: str, reason: str) -> None:
        super().__init__(
            f"{tool} cannot run on this server now: {reason}. Nothing was recorded and the "
            "Idempotency-Key was not used.",
            hint="Retry later with the same Idempotency-Key, or ask the operator of this outbox to fix "
            "what is named above; GET /v1/tools marks the tools that cannot run here.",
            retry_after=self.RETRY_AFTER_SECONDS,
            tool=tool,
            reason=reason,
        )


# Idempotency keys (draft-ietf-httpapi-idempotency-key-header).


class IdempotencyKeyMissing(Malformed):
    type = "idempotency-key-missing"
    title = "Idempotency-Key required"

    def __init__(self) -> None:
        super().__init__(
            "POST /v1/actions needs an Idempotency-Key header.",
            hint="Send a unique Idempotency-Key (for example a UUID) per intended action, and the "
            "same key when you retry that action.",
        )


class IdempotencyKeyInvalid(Malformed):
    type = "idempotency-key-invalid"
    title = "Invalid Idempotency-Key"

    def __init__(self) -> None:
        super().__init__(
            "The Idempotency-Key must be 1 to 255 printable ASCII characters without spaces.",
            hint="Use a UUID or another printable token.",
        )


class IdempotencyKeyReused(Invalid):
    type = "idempotency-key-reused"
    title = "Idempotency-Key reused with a different request"

    def __init__(self, action_id: str | None) -> None:
        super().__init__(
            "This Idempotency-Key was already used for a different request (tool, args or on_behalf_of differ).",
            hint="Use a new Idempotency-Key for a new action; reuse a key only to retry the exact same request.",
            action_id=action_id,
        )


class IdempotencyKeyInProgress(Conflict):
    type = "idempotency-key-in-progress"
    title = "Request with this Idempotency-Key in progress"

    def __init__(self) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being processed.",
            hint="Retry after the number of seconds in Retry-After; you will get the original answer.",
            retry_after=1,
        )


# Approvals.


class ApprovalsMisconfigured(Unavailable):
    type = "approvals-misconfigured"
    title = "Approvals are misconfigured"

    def __init__(self) -> None:
        super().__init__(
            "This call needs a human approval, but the approval configuration does not load: nothing was recorded.",
            hint="Retry later with the same Idempotency-Key; an operator must fix policies/approvals.yaml.",
            retry_after=60,
        )
