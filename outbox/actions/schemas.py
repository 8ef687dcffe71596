"""Payloads of the agent contract."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from outbox.actions.models import Action, ActionStatus
from outbox.identities import canonical_identity
from outbox.policy.engine import Effect
from outbox.urls import parse_url

_CONTROL = {chr(c) for c in range(32)} | {"\x7f"}


class ActionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool: str = Field(min_length=1, max_length=200, description="Tool name, as listed by GET /v1/tools.")
    args: dict[str, Any] = Field(default_factory=dict, description="Arguments, per the tool's JSON Schema.")
    on_behalf_of: str | None = Field(
        default=None,
        min_length=1,
        max_length=320,
        description=(
            "The human this agent acts for: a bare e-mail address (ada@example.com), user:<name> or "
            "slack:<Slack user id>. Stored in canonical form (user:ada@example.com); display names, "
            "mailto: and invisible characters are refused."
        ),
    )
    reason: str | None = Field(default=None, max_length=2000, description="Why the agent makes this call.")
    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        description=(
            "Optional http(s) URL POSTed with the action when it reaches a terminal state, signed "
            "with HMAC-SHA256 (header X-Outbox-Signature); retried until it answers 2xx. Policy must "
            "allow act `callback` on the URL's http: object for this agent, or the request is refused "
            "(422); a call denied by policy is never called back."
        ),
    )

    @field_validator("on_behalf_of", "tool")
    @classmethod
    def _no_control_characters(cls, value: str | None) -> str | None:
        if value is not None and any(ch in _CONTROL for ch in value):
            raise ValueError("control characters (CR, LF, NUL, …) are not allowed")
        return value

    @field_validator("on_behalf_of")
    @classmethod
    def _canonical_person(cls, value: str | None) -> str | None:
        # The person is stored, fingerprinted and compared in one canonical form
        # (`user:ada@example.com`), so no spelling lets them approve their own call.
        return None if value is None else canonical_identity(value)

    @field_validator("callback_url")
    @classmethod
    def _callback_url(cls, value: str | None) -> str | None:
        # The canonical form (outbox/urls.py) is what policy decides and what is POSTed to;
        # URLRefused is a ValueError, so an ambiguous URL is a 422 naming callback_url.
        return None if value is None else parse_url(value).wire


class ActionDecisionOut(BaseModel):
    """What policy decided for the call. (Named apart from an approver's `DecisionOut`, so the
    OpenAPI document has two clean schema names instead of module-qualified ones.)"""

    effect: Effect
    rules: list[dict[str, Any]]
    policy_version: str


class ResultOut(BaseModel):
    artifact: dict[str, Any] | None
    response: dict[str, Any] | None


class ActionLinks(BaseModel):
    self: str = Field(description="This action.")
    cancel: str = Field(description="POST here to cancel it while it is queued, deferred or awaiting approval.")
    # Present only when a human is asked: typed as a plain string (never null) in the document.
    approval: Annotated[
        str | None,
        WithJsonSchema(
            {
                "type": "string",
                "description": (
                    "The approval request a human decides on, for an action that needs one "
                    "(admin API, with the admin token)."
                ),
            }
        ),
    ] = Field(default=None, exclude_if=lambda value: value is None)

    @classmethod
    def of(cls, action_id: str, decision_effect: str) -> ActionLinks:
        return cls(
            self=f"/v1/actions/{action_id}",
            cancel=f"/v1/actions/{action_id}/cancel",
            # The approvals API takes an action's id as the approval's reference.
            approval=f"/v1/admin/approvals/{action_id}" if decision_effect == "approve" else None,
        )


class ActionOut(BaseModel):
    id: str
    status: ActionStatus
    tool: str
    args: dict[str, Any]
    on_behalf_of: str | None
    reason: str | None
    decision: ActionDecisionOut
    targets: list[dict[str, Any]]
    status_reason: str | None
    attempts: int
    not_before: datetime | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    preview: dict[str, Any] | None
    result: ResultOut | None
    # RFC 9457 problem document when a human or an expiry decided the outcome (rejected,
    # expired): the approver's reason, and a hint saying whether asking again makes sense.
    problem: dict[str, Any] | None = None
    links: ActionLinks

    @classmethod
    def of(cls, action: Action) -> ActionOut:
        return cls.of_columns({name: getattr(action, name) for name in _SHOWN_COLUMNS})

    @classmethod
    def of_columns(cls, action: Mapping[str, Any]) -> ActionOut:
        """From the action's column values (the submission path has them before any row exists)."""
        has_result = action["artifact"] is not None or action["response"] is not None
        return cls(
            id=action["id"],
            status=action["status"],
            tool=action["tool"],
            args=action["args"],
            on_behalf_of=action["on_behalf_of"],
            reason=action["reason"],
            decision=ActionDecisionOut(
                effect=action["decision_effect"],
                rules=action["decision_rules"],
                policy_version=action["policy_version"],
            ),
            targets=action["targets"],
            status_reason=action["status_reason"],
            attempts=action["attempts"],
            not_before=action["not_before"],
            created_at=action["created_at"],
            updated_at=action["updated_at"],
            finished_at=action["finished_at"],
            preview=action["preview"],
            result=ResultOut(artifact=action["artifact"], response=action["response"]) if has_result else None,
            problem=action["problem"],
            links=ActionLinks.of(action["id"], action["decision_effect"]),
        )


# The columns `of_columns` reads.
_SHOWN_COLUMNS = (
    "id",
    "status",
    "tool",
    "args",
    "on_behalf_of",
    "reason",
    "decision_effect",
    "decision_rules",
    "policy_version",
    "targets",
    "status_reason",
    "attempts",
    "not_before",
    "created_at",
    "updated_at",
    "finished_at",
    "preview",
    "artifact",
    "response",
    "problem",
)


class OutcomeOut(BaseModel):
    """One call's outcome under one policy version (`outbox.policy.counterfactual.Outcome`)."""

    effect: str = Field(
        description="allow, approve or deny; `refused` when that policy would refuse the call as invalid."
    )
    policy_version: str
    rules: list[str] = Field(description="The rules that decided it, as written.")
    escalation: str | None = None
    quorum: int | None = Field(default=None, description="For `approve`: the approvals needed.")
    expires_in_seconds: int | None = Field(default=None, description="For `approve`: how long the request stays open.")
    deferred: str | None = None


class ShadowOut(BaseModel):
    """What the shadow policy decided for this call (docs/shadow-policy.md). Never enforced."""

    outcome: OutcomeOut
    changes: list[str] = Field(
        description="How the shadow's outcome differs from the live one (`allow-to-deny`, `gate-changed`, …); "
        "empty when they agree."
    )
    policy_version: str = Field(description="The shadow policy's version.")
    live: OutcomeOut | None = Field(default=None, description="The live outcome the shadow was compared with.")
    refused: str | None = Field(
        default=None,
        description="Why the shadow policy would refuse the call as invalid (no such tool, arguments its "
        "definition refuses); null when it decided the call.",
    )


class AdminActionOut(ActionOut):
    """An action as an admin reads it: the agent's view, whose agent it is, and the shadow
    policy's decision (null when no shadow policy was configured at submission)."""

    agent_id: str
    shadow: ShadowOut | None

    @classmethod
    def of_action(cls, action: Action) -> AdminActionOut:
        shown = ActionOut.of(action).model_dump()
        return cls.model_validate({**shown, "agent_id": action.agent_id, "shadow": action.shadow})


class ActionPage(BaseModel):
    items: list[ActionOut]
    next_cursor: str | None
    links: dict[str, str]
