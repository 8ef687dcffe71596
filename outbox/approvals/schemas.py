"""What approvers see (CLI, admin API, Slack) and what they send."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from outbox.actions.models import Action
from outbox.approvals.models import ApprovalDecision, ApprovalRequest

Verdict = Literal["approve", "deny"]


class DecisionOut(BaseModel):
    approver: str
    verdict: str
    reason: str | None
    via: str
    digest: str
    created_at: datetime


class ApprovalOut(BaseModel):
    """One approval request with everything an approver needs to decide."""

    id: str
    status: str
    action_id: str
    action_status: str
    action_status_reason: str | None
    # Who asks, and why.
    agent: str
    on_behalf_of: str | None
    agent_reason: str | None
    # What would run.
    tool: str
    args: dict[str, Any]
    targets: list[dict[str, Any]]
    preview: dict[str, Any] | None
    # Why a human is asked, and the terms.
    rules: list[Any]
    gate: dict[str, Any]
    policy_version: str
    digest: str
    quorum: int
    approvals: int
    decisions: list[DecisionOut]
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    reason: str | None
    may_resubmit: bool | None
    consumed_at: datetime | None
    slack: dict[str, str | None] | None
    links: dict[str, str]

    @classmethod
    def of(cls, approval: ApprovalRequest, action: Action, decisions: list[ApprovalDecision]) -> ApprovalOut:
        counted = {d.approver for d in decisions if d.verdict == "approve" and d.digest == approval.digest}
        return cls(
            id=approval.id,
            status=approval.status,
            action_id=action.id,
            action_status=action.status,
            action_status_reason=action.status_reason,
            agent=approval.requested_by,
            on_behalf_of=action.on_behalf_of,
            agent_reason=action.reason,
            tool=action.tool,
            args=action.args,
            targets=action.targets,
            preview=action.preview,
            rules=approval.rules,
            gate=approval.gate,
            policy_version=approval.policy_version,
            digest=approval.digest,
            quorum=approval.quorum,
            approvals=len(counted),
            decisions=[
                DecisionOut(
                    approver=d.approver,
                    verdict=d.verdict,
                    reason=d.reason,
                    via=d.via,
                    digest=d.digest,
                    created_at=d.created_at,
                )
                for d in sorted(decisions, key=lambda d: d.created_at)
            ],
            created_at=approval.created_at,
            expires_at=approval.expires_at,
            decided_at=approval.decided_at,
            decided_by=approval.decided_by,
            reason=approval.reason,
            may_resubmit=approval.may_resubmit,
            consumed_at=approval.consumed_at,
            slack=(
                {"channel": approval.slack_channel, "channel_id": approval.slack_channel_id, "ts": approval.slack_ts}
                if approval.slack_channel
                else None
            ),
            links={
                "self": f"/v1/admin/approvals/{approval.id}",
                "approve": f"/v1/admin/approvals/{approval.id}/approve",
                "deny": f"/v1/admin/approvals/{approval.id}/deny",
            },
        )


class ApprovalPage(BaseModel):
    items: list[ApprovalOut]


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    as_identity: str = Field(
        alias="as",
        min_length=3,
        max_length=320,
        description="The human deciding, e.g. `user:oncall@example.com` or `slack:U0123ABC`.",
    )
    digest: str | None = Field(
        default=None,
        min_length=64,
        max_length=64,
        description="The digest the approver was shown; the decision is refused if it differs.",
    )


class DenyIn(ApproveIn):
    reason: str = Field(min_length=1, max_length=2000, description="Why; the agent receives it.")
    may_resubmit: bool = Field(
        default=False,
        description="Whether the agent may ask again after changing the call as the reason says.",
    )


class DecisionResultOut(BaseModel):
    outcome: str
    message: str
    approval: ApprovalOut
