"""Circuit breakers: a subdomain whose recent mail bounces or draws complaints stops sending.

Over a rolling window (`breaker.window_hours`, counted from the last admin resume if that is more
recent) and once at least `breaker.minimum_sample` recipients have had a final answer:

- sent       = recipients delivered or refused by the relay at RCPT/DATA (5xx),
- bounces    = those refusals + hard bounces reported later (DSNs, provider events),
- complaints = complaints reported (provider feedback loops).

A rate at or above its threshold pauses the subdomain (a `mail_pauses` row with cause `breaker`)
with an audit event. Deferred mail waits; nothing is dropped. Resuming is an admin decision
(`outbox mail resume --subdomain`), which also restarts the count, so one bad batch does not
trip the breaker again the moment it is reset.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session

from outbox.audit.service import record_event
from outbox.mail import repository
from outbox.mail.config import SubdomainConfig
from outbox.mail.models import DeliveryOutcome, FeedbackKind, MailPause, PauseCause, PauseScope

ACTOR = "mail-breaker"


@dataclass(frozen=True, slots=True)
class BreakerReading:
    subdomain: str
    since: datetime
    sent: int
    bounces: int
    complaints: int
    minimum_sample: int
    bounce_threshold: float
    complaint_threshold: float

    @property
    def bounce_rate(self) -> float:
        return self.bounces / self.sent if self.sent else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.sent if self.sent else 0.0

    def trip_reason(self) -> str | None:
        """Why the breaker trips now, or None."""
        if self.sent < self.minimum_sample:
            return None
        over: list[str] = []
        if self.bounce_rate >= self.bounce_threshold:
            over.append(
                f"bounce rate {self.bounce_rate:.2%} ({self.bounces} of {self.sent}) "
                f"reached the threshold of {self.bounce_threshold:.2%}"
            )
        if self.complaint_rate >= self.complaint_threshold:
            over.append(
                f"complaint rate {self.complaint_rate:.2%} ({self.complaints} of {self.sent}) "
                f"reached the threshold of {self.complaint_threshold:.2%}"
            )
        return "; ".join(over) or None

    def as_dict(self) -> dict[str, object]:
        return {
            "since": self.since.isoformat(),
            "sent": self.sent,
            "bounces": self.bounces,
            "complaints": self.complaints,
            "bounce_rate": round(self.bounce_rate, 6),
            "complaint_rate": round(self.complaint_rate, 6),
            "minimum_sample": self.minimum_sample,
            "bounce_threshold": self.bounce_threshold,
            "complaint_threshold": self.complaint_threshold,
        }


def read_breaker(session: Session, sub: SubdomainConfig, now: datetime) -> BreakerReading:
    since = now - timedelta(hours=sub.breaker.window_hours)
    state = repository.subdomain_state(session, sub.domain)
    if state is not None and state.breaker_since is not None and state.breaker_since > since:
        since = state.breaker_since
    outcomes = repository.delivery_counts(session, sub.domain, since)
    feedback = repository.feedback_counts(session, sub.domain, since)
    refused = outcomes.get(DeliveryOutcome.BOUNCED.value, 0)
    return BreakerReading(
        subdomain=sub.domain,
        since=since,
        sent=outcomes.get(DeliveryOutcome.DELIVERED.value, 0) + refused,
        bounces=refused + feedback.get(FeedbackKind.HARD_BOUNCE.value, 0),
        complaints=feedback.get(FeedbackKind.COMPLAINT.value, 0),
        minimum_sample=sub.breaker.minimum_sample,
        bounce_threshold=sub.breaker.bounce_rate,
        complaint_threshold=sub.breaker.complaint_rate,
    )


def evaluate_breaker(session: Session, sub: SubdomainConfig, now: datetime) -> BreakerReading | None:
    """Trip the breaker if the rates say so; return the reading if this call tripped it.

    Exactly one of several racing evaluations inserts the pause and writes the audit event.
    """
    reading = read_breaker(session, sub, now)
    reason = reading.trip_reason()
    if reason is None:
        return None
    pause = MailPause(
        scope=PauseScope.SUBDOMAIN.value,
        target=sub.domain,
        cause=PauseCause.BREAKER.value,
        reason=f"circuit breaker: {reason} since {reading.since:%Y-%m-%d %H:%M} UTC",
        paused_by=ACTOR,
        paused_at=now,
    )
    if not repository.add_pause(session, pause):
        return None  # already paused (by the breaker or an admin)
    record_event(
        session,
        event_type="mail.breaker_tripped",
        actor=ACTOR,
        data={"subdomain": sub.domain, "reason": pause.reason, **reading.as_dict()},
    )
    return reading
