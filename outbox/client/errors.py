"""Typed errors carrying the outbox's RFC 9457 problem document.

The server answers every refusal as problem+json with a stable `type` URI, a `detail` saying what
was wrong and a `hint` written for agents (an LLM reads it) saying what to do instead. The client
raises one exception class per thing an agent's code would branch on (denied by policy, rejected
by a human, invalid arguments, bad key, cannot run now), each carrying the whole document as
`.problem`, so nothing the server said is lost, and `str(error)` is the detail and the hint: the
text to hand back to the model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ActionNotFound",
    "Denied",
    "Expired",
    "InvalidCall",
    "KeyReused",
    "NotCancellable",
    "OutboxError",
    "OutboxUnavailable",
    "Problem",
    "Rejected",
    "ToolUnavailable",
    "TransportFailed",
    "Unauthorized",
    "error_for",
]

PROBLEM_BASE = "https://agent-outbox.dev/problems/"


class Problem(BaseModel):
    """An RFC 9457 problem document as the outbox sends it; `raw` is the document as received."""

    model_config = ConfigDict(frozen=True)

    type: str = "about:blank"
    title: str = ""
    status: int = 0
    detail: str = ""
    hint: str | None = None
    action_id: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict)

    @property
    def slug(self) -> str:
        """The last part of `type` (`denied-by-policy`): stable, what a caller compares against."""
        return self.type.removeprefix(PROBLEM_BASE).rsplit("/", 1)[-1]

    @classmethod
    def of(cls, document: dict[str, Any], status: int) -> Problem:
        """From a received document; fields of the wrong type are dropped rather than fatal, since
        an error while reading an error would hide the server's explanation."""

        def text(name: str, default: str = "") -> str:
            value = document.get(name, default)
            return value if isinstance(value, str) else default

        hint, action_id = document.get("hint"), document.get("action_id")
        doc_status = document.get("status")
        return cls(
            type=text("type", "about:blank"),
            title=text("title"),
            status=doc_status if isinstance(doc_status, int) and not isinstance(doc_status, bool) else status,
            detail=text("detail"),
            hint=hint if isinstance(hint, str) else None,
            action_id=action_id if isinstance(action_id, str) else None,
            raw=dict(document),
        )


class OutboxError(Exception):
    """Any refusal or failure answered by the outbox (or on the way to it).

    `problem` is the server's document; `retry_after` the seconds the server asked to wait, when it
    said; `idempotency_key` the key of the submission, so a caller may retry it later itself.
    """

    def __init__(
        self, problem: Problem, *, retry_after: float | None = None, idempotency_key: str | None = None
    ) -> None:
        super().__init__(problem.detail or problem.title or f"HTTP {problem.status}")
        self.problem = problem
        self.retry_after = retry_after
        self.idempotency_key = idempotency_key

    @property
    def status(self) -> int:
        return self.problem.status

    @property
    def hint(self) -> str | None:
        return self.problem.hint

    @property
    def action_id(self) -> str | None:
        return self.problem.action_id

    def __str__(self) -> str:
        detail = self.problem.detail or self.problem.title or f"HTTP {self.problem.status}"
        return f"{detail} Hint: {self.problem.hint}" if self.problem.hint else detail


class Denied(OutboxError):
    """403 denied-by-policy: nothing ran. The action is recorded (`action_id`); `rules` are the
    policy lines that decided, `hint` says whether anything could be allowed instead."""

    @property
    def rules(self) -> list[dict[str, Any]]:
        decision = self.problem.raw.get("decision")
        rules = decision.get("rules") if isinstance(decision, dict) else None
        return [r for r in rules if isinstance(r, dict)] if isinstance(rules, list) else []


class Rejected(OutboxError):
    """A human rejected the call (403 rejected-by-approver): nothing ran. `reason` is the
    approver's, `may_resubmit` whether a changed call could be accepted."""

    @property
    def reason(self) -> str | None:
        reason = self.problem.raw.get("reason")
        return reason if isinstance(reason, str) else None

    @property
    def approver(self) -> str | None:
        approver = self.problem.raw.get("approver")
        return approver if isinstance(approver, str) else None

    @property
    def may_resubmit(self) -> bool:
        return self.problem.raw.get("may_resubmit") is True


class Expired(Rejected):
    """Nobody approved in time (403 approval-expired): nothing ran, nobody said no. A `Rejected`
    too, because for the agent the outcome is the same: the call did not happen."""


class InvalidCall(OutboxError):
    """422: the call's fields are wrong (unknown tool, bad arguments, bad `on_behalf_of`).
    Nothing was recorded. `errors` lists each `{"field": "args.url", "message": …}`."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        errors = self.problem.raw.get("errors")
        return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []

    @property
    def fields(self) -> list[str]:
        return [str(e.get("field")) for e in self.errors]


class KeyReused(OutboxError):
    """422 idempotency-key-reused: this key was already used for a different call. A caller that
    passed its own `idempotency_key` must pick a new one for a new call."""


class Unauthorized(OutboxError):
    """401: the API key is missing, unknown or revoked. Retrying does not help."""


class ActionNotFound(OutboxError):
    """404: no such action for this agent (another agent's action looks the same)."""


class NotCancellable(OutboxError):
    """409 action-not-cancellable: it is already running or finished."""


class OutboxUnavailable(OutboxError):
    """503 (or 429, or 5xx) still answered after the client's retries: the same call may succeed
    later; `retry_after` says when, if the server said."""


class ToolUnavailable(OutboxUnavailable):
    """503 for a tool that cannot run on this server now (no sandbox, a missing secret). Nothing
    was recorded and the key is not consumed: the same call may be sent again once it is fixed."""

    @property
    def reason(self) -> str:
        for name in ("reason", "missing", "unavailable_reason"):
            value = self.problem.raw.get(name)
            if isinstance(value, str) and value:
                return value
        return self.problem.detail


class TransportFailed(OutboxError):
    """The outbox could not be reached, or its answer was lost, on every attempt. With a key, the
    call may or may not be recorded: send it again with the same `idempotency_key` to find out."""


_BY_SLUG: dict[str, type[OutboxError]] = {
    "denied-by-policy": Denied,
    "rejected-by-approver": Rejected,
    "approval-expired": Expired,
    "idempotency-key-reused": KeyReused,
    "action-not-found": ActionNotFound,
    "action-not-cancellable": NotCancellable,
}
_BY_STATUS: dict[int, type[OutboxError]] = {401: Unauthorized, 404: ActionNotFound, 422: InvalidCall}


def error_for(problem: Problem, *, retry_after: float | None = None, idempotency_key: str | None = None) -> OutboxError:
    """The exception for a problem document: by its type first (stable), then by status."""
    cls = _BY_SLUG.get(problem.slug) or _BY_STATUS.get(problem.status)
    if cls is None and (problem.status == 429 or problem.status >= 500):
        # A 503 about a tool names it in its type (`tool-unavailable`); other 503s are the
        # outbox's own (approvals misconfigured, not ready).
        cls = ToolUnavailable if problem.status == 503 and "tool" in problem.slug else OutboxUnavailable
    return (cls or OutboxError)(problem, retry_after=retry_after, idempotency_key=idempotency_key)
