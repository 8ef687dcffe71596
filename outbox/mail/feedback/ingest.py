"""Feedback after the fact: provider events, RFC 3464 bounce messages, one-click unsubscribes.

Each event is stored once (by its id: the provider's, or for a DSN a digest of the message and
the recipient), attributed to the sending subdomain when it can be (the event says so, or its
Message-ID is one we sent), and acted on: hard bounces and complaints suppress the recipient from
every subdomain, unsubscribes from the subdomain that mailed them. Bounces and complaints then
count towards that subdomain's breaker, which may pause it.

Recipients are matched as mailboxes (`outbox.mail.addresses.recipient_key`): a bounce for
`ERIN@example.net` suppresses the message sent to `erin@example.net`, and every other spelling.
A report naming something that is not an address is stored but suppresses nothing: no message
of ours can have gone to it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session

from outbox.audit.service import record_event
from outbox.db import Database
from outbox.mail import repository
from outbox.mail.addresses import RecipientAddressError, recipient_key
from outbox.mail.config import MailConfig
from outbox.mail.feedback.breakers import evaluate_breaker
from outbox.mail.feedback.dsn import BounceKind, parse_dsn
from outbox.mail.feedback.events import BounceEvent, ComplaintEvent, UnsubscribeEvent
from outbox.mail.models import (
    EVERY_SUBDOMAIN,
    FeedbackKind,
    MailFeedbackEvent,
    MailSuppression,
    SuppressionReason,
)
from outbox.mail.sending.unsubscribe import UnsubscribeRequest
from outbox.sqltypes import utcnow

ProviderEvent = BounceEvent | ComplaintEvent | UnsubscribeEvent

_SUPPRESSES = {
    FeedbackKind.HARD_BOUNCE: SuppressionReason.HARD_BOUNCE,
    FeedbackKind.COMPLAINT: SuppressionReason.COMPLAINT,
    FeedbackKind.UNSUBSCRIBE: SuppressionReason.UNSUBSCRIBE,
}


@dataclass(frozen=True, slots=True)
class FeedbackInput:
    event_id: str
    kind: FeedbackKind
    recipient: str
    occurred_at: datetime
    source: str  # webhook | dsn
    sender_domain: str | None = None
    message_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class IngestReport:
    accepted: int = 0
    duplicates: int = 0
    suppressed: list[str] = field(default_factory=list)
    unattributed: int = 0
    breakers_tripped: list[str] = field(default_factory=list)
    # Reports whose recipient is not an address (stored, but nothing to suppress).
    not_addresses: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "suppressed": self.suppressed,
            "unattributed": self.unattributed,
            "breakers_tripped": self.breakers_tripped,
            "not_addresses": self.not_addresses,
        }


def from_provider_event(event: ProviderEvent) -> FeedbackInput:
    if isinstance(event, BounceEvent):
        kind = FeedbackKind.HARD_BOUNCE if event.kind == "hard" else FeedbackKind.SOFT_BOUNCE
        detail: dict[str, Any] = {"status": event.status, "diagnostic": event.diagnostic}
    elif isinstance(event, ComplaintEvent):
        kind, detail = FeedbackKind.COMPLAINT, {"feedback_type": event.feedback_type}
    else:
        kind, detail = FeedbackKind.UNSUBSCRIBE, {}
    return FeedbackInput(
        event_id=f"webhook:{event.event_id}",
        kind=kind,
        recipient=event.recipient,
        occurred_at=event.occurred_at,
        source="webhook",
        sender_domain=event.sender_domain,
        message_id=event.message_id,
        detail={k: v for k, v in detail.items() if v is not None},
    )


def from_dsn(raw: bytes, received_at: datetime | None = None) -> list[FeedbackInput]:
    """One input per bounced recipient of a DSN; empty when the message reports no failure."""
    report = parse_dsn(raw)
    digest = hashlib.sha256(raw).hexdigest()[:32]
    at = received_at or utcnow()
    return [
        FeedbackInput(
            event_id=f"dsn:{digest}:{bounced.recipient}"[:240],
            kind=FeedbackKind.HARD_BOUNCE if bounced.kind is BounceKind.HARD else FeedbackKind.SOFT_BOUNCE,
            recipient=bounced.recipient,
            occurred_at=at,
            source="dsn",
            message_id=report.original_message_id,
            detail={
                k: v
                for k, v in {
                    "status": bounced.status,
                    "diagnostic": bounced.diagnostic,
                    "reporting_mta": report.reporting_mta,
                }.items()
                if v is not None
            },
        )
        for bounced in report.recipients
    ]


def _attribute(session: Session, config: MailConfig, item: FeedbackInput) -> tuple[str | None, str | None]:
    """(subdomain, action id) the event is about, as far as we can tell."""
    subdomain = item.sender_domain if item.sender_domain and config.subdomain(item.sender_domain) else None
    action_id = None
    if item.message_id:
        rows = repository.deliveries_by_message_id(session, item.message_id.strip())
        row = next((r for r in rows if _same_mailbox(r.recipient, item.recipient)), rows[0] if rows else None)
        if row is not None:
            subdomain, action_id = subdomain or row.subdomain, row.action_id
        elif subdomain is None:
            # Our Message-IDs are <id@subdomain> (outbox.mail.message.message_id_for).
            domain = item.message_id.strip().removesuffix(">").rpartition("@")[2].lower()
            subdomain = domain if config.subdomain(domain) else None
    return subdomain, action_id


def _same_mailbox(address: str, other: str) -> bool:
    try:
        return recipient_key(address) == recipient_key(other)
    except RecipientAddressError:
        return False


def _key_or_none(recipient: str) -> str | None:
    try:
        return recipient_key(recipient)
    except RecipientAddressError:
        return None


def suppress(
    session: Session,
    *,
    recipient: str,
    scope: str,
    reason: SuppressionReason,
    source: str,
    detail: str | None = None,
    actor: str,
) -> bool:
    """Add a suppression of the mailbox `recipient` names (with its audit event) unless the same
    one exists; True if added. Raises `RecipientAddressError` when `recipient` is not an address."""
    recipient = recipient_key(recipient)
    added = repository.add_suppression(
        session,
        MailSuppression(
            recipient=recipient, scope=scope, reason=reason.value, detail=detail, source=source, created_at=utcnow()
        ),
    )
    if added:
        record_event(
            session,
            event_type="mail.suppressed",
            actor=actor,
            data={"recipient": recipient, "scope": scope, "reason": reason.value, "source": source, "detail": detail},
        )
    return added


def ingest(db: Database, config: MailConfig, items: Iterable[FeedbackInput], actor: str) -> IngestReport:
    """Store, suppress and count each event, in one transaction; then evaluate the breakers."""
    report = IngestReport()
    affected: set[str] = set()
    now = utcnow()
    with db.session() as session:
        for item in items:
            subdomain, action_id = _attribute(session, config, item)
            key = _key_or_none(item.recipient)
            stored = repository.add_feedback_event(
                session,
                MailFeedbackEvent(
                    event_id=item.event_id,
                    kind=item.kind.value,
                    recipient=key or item.recipient[:320],
                    subdomain=subdomain,
                    message_id=item.message_id,
                    action_id=action_id,
                    source=item.source,
                    detail=item.detail,
                    occurred_at=item.occurred_at,
                    received_at=now,
                ),
            )
            if not stored:
                report.duplicates += 1
                continue
            report.accepted += 1
            report.unattributed += subdomain is None
            reason = _SUPPRESSES.get(item.kind)
            if reason is not None:
                # An address that does not exist, or a person who called us spam, is not mailed
                # from any subdomain again; an unsubscribe is from the subdomain that mailed them.
                scope = subdomain if item.kind is FeedbackKind.UNSUBSCRIBE and subdomain else EVERY_SUBDOMAIN
                if key is None:
                    report.not_addresses.append(item.recipient)
                elif suppress(
                    session,
                    recipient=key,
                    scope=scope,
                    reason=reason,
                    source=item.source,
                    detail=str(item.detail.get("diagnostic") or item.detail.get("status") or "") or None,
                    actor=actor,
                ):
                    report.suppressed.append(key)
            if subdomain is not None and item.kind in (FeedbackKind.HARD_BOUNCE, FeedbackKind.COMPLAINT):
                affected.add(subdomain)
        for domain in sorted(affected):
            sub = config.subdomain(domain)
            if sub is not None and evaluate_breaker(session, sub, now) is not None:
                report.breakers_tripped.append(domain)
    return report


def unsubscribe(db: Database, request: UnsubscribeRequest, actor: str = "one-click") -> bool:
    """RFC 8058 one-click: suppress the recipient from the subdomain that mailed them, at once.
    Idempotent: a second request for the same pair changes nothing and returns False."""
    with db.session() as session:
        return suppress(
            session,
            recipient=request.recipient,
            scope=request.subdomain,
            reason=SuppressionReason.UNSUBSCRIBE,
            source="one-click",
            actor=actor,
        )
