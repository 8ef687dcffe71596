"""What the mail admin API and CLI show and accept."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from outbox.mail.models import MailPause, MailSuppression, SuppressionReason
from outbox.mail.sending.message import normalise_address


class CapUsageOut(BaseModel):
    name: str
    kind: str
    key: str
    used: int
    limit: int
    resets_at: datetime


class PauseOut(BaseModel):
    scope: str
    target: str
    cause: str
    reason: str
    paused_by: str
    paused_at: datetime

    @classmethod
    def of(cls, pause: MailPause) -> PauseOut:
        return cls.model_validate(pause.model_dump())


class BreakerOut(BaseModel):
    tripped: bool
    window_hours: int
    since: datetime
    sent: int
    bounces: int
    complaints: int
    bounce_rate: float
    complaint_rate: float
    minimum_sample: int
    bounce_threshold: float
    complaint_threshold: float


class DnsOut(BaseModel):
    enforced: bool
    # A development subdomain delivers to the local sink only and its DNS is never looked up.
    development: bool = False
    ok: bool | None
    blocked: bool
    reason: str | None
    checked_at: datetime | None
    checks: list[dict[str, Any]] = Field(default_factory=list)


class WarmUpOut(BaseModel):
    start_date: date
    day: int | None  # None once the ramp has reached the full daily cap
    daily_cap_today: int
    full_daily_cap: int


class SubdomainStatusOut(BaseModel):
    domain: str
    # ok: may send now; paused: a kill switch or the breaker holds it; blocked: DNS check failed.
    sending: Literal["ok", "paused", "blocked"]
    reasons: list[str]
    caps: list[CapUsageOut]
    recipient_domains: list[CapUsageOut]
    agents: list[CapUsageOut]
    per_recipient_daily: int | None
    recipients_at_daily_cap: int
    warm_up: WarmUpOut | None
    send_window: dict[str, Any] | None
    breaker: BreakerOut
    dns: DnsOut
    pauses: list[PauseOut]


class MailStatusOut(BaseModel):
    generated_at: datetime
    all_paused: PauseOut | None
    agents_paused: list[PauseOut]
    subdomains: list[SubdomainStatusOut]
    suppressions: dict[str, int]


class SuppressionOut(BaseModel):
    recipient: str
    scope: str
    reason: str
    detail: str | None
    source: str
    created_at: datetime

    @classmethod
    def of(cls, row: MailSuppression) -> SuppressionOut:
        return cls.model_validate(row.model_dump())


class SuppressionPage(BaseModel):
    items: list[SuppressionOut]
    counts: dict[str, int]


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipient: str
    # Only mail from this subdomain; every subdomain when omitted.
    subdomain: str | None = None
    reason: SuppressionReason = SuppressionReason.MANUAL
    detail: str | None = Field(default=None, max_length=2000)

    @field_validator("recipient")
    @classmethod
    def _address(cls, value: str) -> str:
        return normalise_address(value)


class RemovedOut(BaseModel):
    removed: list[SuppressionOut]


class PauseIn(BaseModel):
    """Exactly one of `subdomain`, `agent`, `all`."""

    model_config = ConfigDict(extra="forbid")

    subdomain: str | None = None
    agent: str | None = None
    all: bool = False
    reason: str = Field(default="paused by an operator", min_length=1, max_length=2000)
    # Who decides (recorded in the audit event); the admin token says only that it is an admin.
    as_identity: str = Field(default="admin", alias="as", min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_scope(self) -> PauseIn:
        if sum([self.subdomain is not None, self.agent is not None, self.all]) != 1:
            raise ValueError("give exactly one of subdomain, agent or all")
        return self


class PauseChangeOut(BaseModel):
    scope: str
    target: str
    changed: bool
    detail: str
