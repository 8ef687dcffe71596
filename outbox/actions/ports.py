"""What actions need from the approvals domain, which sits above them (approving moves an action).

The composition root (`Runtime.build`) wires the implementation, `outbox.approvals.port`; this
package never imports approvals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from sqlmodel import Session

from outbox.actions.models import Action
from outbox.policy.engine import PolicyDecision

if TYPE_CHECKING:
    from outbox.runtime import Runtime


class ApprovalRequests(Protocol):
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
        """Open the approval request of an action policy sends to a human, in the submission's
        transaction."""
        ...

    def cancel(self, session: Session, action_id: str, *, actor: str) -> None:
        """Close the pending request of an action its agent has just cancelled, if it has one."""
        ...
