"""What the delivery queue hands a channel (a claimed delivery) and what the channel answers
(delivered, retry later, give up). Channels import this module, not the queue's service."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from outbox.jobs.repository import Claim

KIND_SLACK_MESSAGE = "slack.message"
KIND_SLACK_EPHEMERAL = "slack.ephemeral"
KIND_SLACK_VIEW = "slack.view"
KIND_CALLBACK = "callback"


@dataclass(frozen=True, slots=True)
class Delivered:
    note: str = ""


@dataclass(frozen=True, slots=True)
class RetryLater:
    """The peer is unavailable or asked us to slow down; `retry_after` is its Retry-After."""

    error: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Retrying cannot help (bad token, unknown channel, receiver refused with 4xx)."""

    error: str


DeliveryResult = Delivered | RetryLater | GiveUp


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: str
    kind: str
    subject_id: str
    payload: dict[str, Any]
    generation: int
    attempts: int
    created_at: datetime
    lease: Claim
