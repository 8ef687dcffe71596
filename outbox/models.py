"""Every table, imported in one place so that metadata (Alembic, tests) sees them all."""

from outbox.actions.models import Action
from outbox.agents.models import Agent, ApiKey
from outbox.approvals.models import ApprovalRequest
from outbox.audit.models import AuditEvent
from outbox.budgets.models import BudgetCounter, ConcurrencySlot
from outbox.idempotency.models import IdempotencyRecord

__all__ = [
    "Action",
    "Agent",
    "ApiKey",
    "ApprovalRequest",
    "AuditEvent",
    "BudgetCounter",
    "ConcurrencySlot",
    "IdempotencyRecord",
]
