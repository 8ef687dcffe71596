"""The mail ledger: what every process needs to agree on before a message leaves.

Budgets themselves live in `budget_counters` (outbox.budgets); these tables hold the rest of the
shared state: which recipient of which action was charged and what the relay said (so a retry
never mails a settled recipient and never pays twice), who must not be mailed, what is paused,
the feedback that drives the breakers, and each subdomain's last DNS verdict.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, String, Text
from sqlmodel import Field, SQLModel

from outbox.sqltypes import JSONColumn, UTCDateTime, utcnow

# `scope` of a suppression that applies to every sending subdomain.
EVERY_SUBDOMAIN = "*"


class DeliveryOutcome(enum.StrEnum):
    PENDING = "pending"  # charged, handed to the relay, no result recorded yet
    DELIVERED = "delivered"  # 2xx from the relay
    BOUNCED = "bounced"  # 5xx at RCPT or DATA: the recipient was refused
    REFUSED = "refused"  # 5xx at MAIL: the relay refused us, not the recipient
    RETRYING = "retrying"  # 4xx or no reply: a retry of the action sends again
    SUPPRESSED = "suppressed"  # on the suppression list; never sent

    @property
    def settled(self) -> bool:
        return self not in (DeliveryOutcome.PENDING, DeliveryOutcome.RETRYING)


class SuppressionReason(enum.StrEnum):
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    MANUAL = "manual"


class PauseScope(enum.StrEnum):
    ALL = "all"
    SUBDOMAIN = "subdomain"
    AGENT = "agent"


class PauseCause(enum.StrEnum):
    MANUAL = "manual"
    BREAKER = "breaker"


class FeedbackKind(enum.StrEnum):
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"


class MailDelivery(SQLModel, table=True):
    """One recipient of one action. Created when its budget is charged (or when it is found
    suppressed), updated with the relay's answer after each attempt."""

    __tablename__ = "mail_deliveries"
    __table_args__ = (
        Index("ix_mail_deliveries_subdomain_at", "subdomain", "at"),
        Index("ix_mail_deliveries_message_id", "message_id"),
    )

    action_id: str = Field(sa_column=Column(String(40), primary_key=True))
    recipient: str = Field(sa_column=Column(String(320), primary_key=True))
    subdomain: str = Field(max_length=253)
    agent_name: str = Field(max_length=200)
    message_id: str = Field(max_length=320)
    outcome: str = Field(max_length=16)  # DeliveryOutcome
    # When this recipient was charged against the budgets; None if it never was (suppressed).
    charged_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    attempts: int = 0
    # The reply that decided the last attempt (None: no reply), and where (RCPT, DATA, …).
    code: int | None = None
    message: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    stage: str | None = Field(default=None, max_length=16)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))


class MailSuppression(SQLModel, table=True):
    """A recipient who must not be mailed, from one subdomain or from all (`scope` = "*")."""

    __tablename__ = "mail_suppressions"

    recipient: str = Field(sa_column=Column(String(320), primary_key=True))
    scope: str = Field(sa_column=Column(String(253), primary_key=True))
    reason: str = Field(max_length=16)  # SuppressionReason
    detail: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Who or what suppressed it: `dsn`, `webhook`, `one-click`, `cli`, `api`, `admin:<name>`.
    source: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))


class MailPause(SQLModel, table=True):
    """A kill switch that is on: all mail, one subdomain, or one agent's mail waits."""

    __tablename__ = "mail_pauses"

    scope: str = Field(sa_column=Column(String(16), primary_key=True))  # PauseScope
    # The subdomain or agent name; "*" for all mail.
    target: str = Field(sa_column=Column(String(253), primary_key=True))
    cause: str = Field(max_length=16)  # PauseCause
    reason: str = Field(sa_column=Column(Text, nullable=False))
    paused_by: str = Field(max_length=200)
    paused_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))


class MailFeedbackEvent(SQLModel, table=True):
    """A bounce, complaint or unsubscribe reported after the fact, ingested once per event id."""

    __tablename__ = "mail_feedback_events"
    __table_args__ = (Index("ix_mail_feedback_subdomain_received", "subdomain", "received_at"),)

    # Namespaced by source: `webhook:<provider id>`, `dsn:<digest of the DSN>:<recipient>`.
    event_id: str = Field(sa_column=Column(String(240), primary_key=True))
    kind: str = Field(max_length=16)  # FeedbackKind
    recipient: str = Field(max_length=320)
    # The sending subdomain the event counts against (None: could not be attributed).
    subdomain: str | None = Field(default=None, max_length=253)
    message_id: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    action_id: str | None = Field(default=None, max_length=40)
    source: str = Field(max_length=16)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONColumn, nullable=False))
    occurred_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    received_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))


class MailSubdomainState(SQLModel, table=True):
    """Per subdomain: where the breaker starts counting, and the last DNS verdict."""

    __tablename__ = "mail_subdomain_state"

    subdomain: str = Field(sa_column=Column(String(253), primary_key=True))
    # The breaker counts sends and feedback after this instant (set when an admin resumes).
    breaker_since: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    dns_ok: bool | None = None
    dns_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    dns_report: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONColumn, nullable=True))
    dns_checked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    # Set by the process that takes a periodic check, so that one process checks per interval.
    dns_claimed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
