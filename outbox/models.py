"""Every table, imported in one place so that metadata (Alembic, tests) sees them all."""

from outbox.actions.models import Action
from outbox.agents.models import Agent, ApiKey
from outbox.approvals.models import ApprovalDecision, ApprovalRequest
from outbox.audit.models import AuditEvent
from outbox.budgets.models import BudgetCounter, ConcurrencySlot
from outbox.deliveries.models import Delivery
from outbox.idempotency.models import IdempotencyRecord
from outbox.mail.models import (
    MailDelivery,
    MailFeedbackEvent,
    MailPause,
    MailSubdomainState,
    MailSuppression,
)
from outbox.slack.models import SlackSeenRequest
from outbox.users.models import ConsoleSession, LoginAttempt, User

__all__ = [
    "Action",
    "Agent",
    "ApiKey",
    "ApprovalDecision",
    "ApprovalRequest",
    "AuditEvent",
    "BudgetCounter",
    "ConcurrencySlot",
    "ConsoleSession",
    "Delivery",
    "IdempotencyRecord",
    "LoginAttempt",
    "MailDelivery",
    "MailFeedbackEvent",
    "MailPause",
    "MailSubdomainState",
    "MailSuppression",
    "SlackSeenRequest",
    "User",
]
