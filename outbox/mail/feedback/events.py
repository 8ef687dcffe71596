"""Feedback events a mail provider (or relay) posts to the outbox's webhook.

Providers all speak different JSON, so the outbox defines one small schema and a provider is
connected by a thin adapter that posts it. Every event names the recipient; bounces say whether
they are hard or soft; `event_id` is the provider's own id, so redelivered webhooks are ingested
once. The webhook's authentication belongs to the API layer.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from outbox.mail.sending.message import normalise_address


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(min_length=1, max_length=200)
    recipient: str
    occurred_at: AwareDatetime
    # The sending subdomain, when the provider knows it; lets breakers attribute the event.
    sender_domain: str | None = None
    # The Message-ID of the message the event is about, angle brackets included.
    message_id: str | None = Field(default=None, max_length=998)

    @field_validator("recipient")
    @classmethod
    def _normalised(cls, value: str) -> str:
        return normalise_address(value)

    @field_validator("sender_domain")
    @classmethod
    def _lowercase(cls, value: str | None) -> str | None:
        return None if value is None else value.lower().removesuffix(".")


class BounceEvent(_Event):
    type: Literal["bounce"]
    kind: Literal["hard", "soft"]
    status: str | None = Field(default=None, pattern=r"^[245]\.\d{1,3}\.\d{1,3}$")
    diagnostic: str | None = Field(default=None, max_length=2000)


class ComplaintEvent(_Event):
    """A recipient marked the message as spam (an ARF report, RFC 5965, relayed as JSON)."""

    type: Literal["complaint"]
    feedback_type: str | None = Field(default=None, max_length=64)


class UnsubscribeEvent(_Event):
    type: Literal["unsubscribe"]


ProviderEvent = Annotated[BounceEvent | ComplaintEvent | UnsubscribeEvent, Field(discriminator="type")]


class ProviderEventBatch(BaseModel):
    """The webhook body: `{"events": [...]}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    events: list[ProviderEvent] = Field(min_length=1, max_length=1000)


def parse_provider_events(body: bytes | str) -> list[BounceEvent | ComplaintEvent | UnsubscribeEvent]:
    """Validate a webhook body; raises pydantic.ValidationError naming each bad field."""
    return list(ProviderEventBatch.model_validate_json(body).events)
