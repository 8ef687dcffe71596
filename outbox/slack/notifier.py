"""Slack as the approvals' notifier (`outbox.approvals.notifier.ApprovalNotifier`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete
from sqlmodel import Session, col

from outbox.config import Settings
from outbox.slack.client import slack_enabled
from outbox.slack.models import SlackSeenRequest
from outbox.slack.sync import reconcile_messages
from outbox.sqltypes import utcnow

# Slack signatures older than five minutes are refused anyway; remembering them longer is useless.
SEEN_REQUEST_TTL = timedelta(minutes=10)


@dataclass(frozen=True)
class SlackNotifier:
    settings: Settings

    def enabled(self) -> bool:
        return slack_enabled(self.settings)

    def sweep(self, session: Session) -> None:
        """Queue message updates for requests whose state changed; forget old seen requests."""
        if self.enabled():
            reconcile_messages(session)
        session.execute(delete(SlackSeenRequest).where(col(SlackSeenRequest.seen_at) < utcnow() - SEEN_REQUEST_TTL))
