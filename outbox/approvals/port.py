"""The approvals domain as actions see it (`outbox.actions.ports.ApprovalRequests`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlmodel import Session

from outbox.actions.models import Action
from outbox.approvals.service import cancel_request, open_request
from outbox.policy.engine import PolicyDecision

if TYPE_CHECKING:
    from outbox.runtime import Runtime


class ApprovalsPort:
    def open(
        self,
        runtime: Runtime,
        session: Session,
        action: Action,
        *,
        agent: str,
        decision: PolicyDecision,
        escalations: Sequence[str],
    ) -> None:
        open_request(runtime, session, action, agent=agent, decision=decision, escalations=escalations)

    def cancel(self, session: Session, action_id: str, *, actor: str) -> None:
        cancel_request(session, action_id, actor=actor)
