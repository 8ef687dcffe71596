"""Send budgets: which caps one message is charged against, and what they have left.

The unit is a recipient: a message to three people costs three units of the subdomain's hourly
and daily caps and of the agent's daily cap, one unit of each recipient's daily cap, and as many
units of a recipient domain's hourly cap as it has recipients there. Mailbox providers judge a
sender by what reaches their users, so that is what is counted.

A recipient is a mailbox, not a spelling: per-recipient and per-recipient-domain caps are keyed
by `outbox.mail.addresses.recipient_key`, so `Erin@example.net` and `ERIN@EXAMPLE.NET` use one
daily cap, and `exämple.net` and `xn--exmple-cua.net` one domain cap.

Charging goes through `outbox.budgets.service.reserve`, once per send and for every cap at once:
all or nothing, exact across any number of workers, in the database so that it survives a restart
of anything. Each cap carries the units this send owes it (`Cap.units`), charged with one
conditional `UPDATE … WHERE used + units <= limit` per cap inside one savepoint: the reservation
succeeds whole or not at all.

Windows are the budgets module's fixed windows: hours on the hour and days from 00:00 UTC. The
warm-up ramp (`outbox.mail.budgets.warmup.warmup_daily_cap`) counts days in UTC as well.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta

from sqlmodel import Session

from outbox.budgets.service import Cap, reserve, used
from outbox.mail.addresses import recipient_domain, recipient_key
from outbox.mail.budgets.warmup import warmup_daily_cap
from outbox.mail.config import SubdomainConfig

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# How far ahead to look for the warm-up day whose cap first fits a message.
_WARMUP_HORIZON_DAYS = 366


@dataclass(frozen=True, slots=True)
class SendCap:
    """One cap a send is charged against, and how many units this send owes it."""

    name: str  # what the deferral reason and status call it, e.g. "hourly cap of agents.mail…"
    kind: str  # hour | day | recipient_domain_hour | recipient_day | agent_day
    cap: Cap
    units: int


@dataclass(frozen=True, slots=True)
class BudgetVerdict:
    granted: bool
    # When refused: the caps without room, and the instant by which all of them have reopened.
    full: tuple[SendCap, ...] = ()
    retry_at: datetime | None = None
    # A cap the message can never fit (more recipients than the cap allows).
    impossible: SendCap | None = None


def key_prefix(subdomain: str) -> str:
    return f"mail:{subdomain}:"


def hour_key(subdomain: str) -> str:
    return f"mail:{subdomain}:hour"


def day_key(subdomain: str) -> str:
    return f"mail:{subdomain}:day"


def recipient_domain_key(subdomain: str, domain: str) -> str:
    return f"mail:{subdomain}:domain:{domain}:hour"


def recipient_cap_key(subdomain: str, recipient: str) -> str:
    """The per-recipient daily counter of `recipient` (any spelling of the mailbox)."""
    return f"mail:{subdomain}:recipient:{recipient_key(recipient)}:day"


def agent_key(subdomain: str, agent_name: str) -> str:
    return f"mail:{subdomain}:agent:{agent_name}:day"


def daily_limit(sub: SubdomainConfig, today: date) -> int:
    """The subdomain's daily cap today: the full cap, or the warm-up ramp's when lower."""
    if sub.warm_up is None:
        return sub.budgets.per_day
    ramp = sub.warm_up
    return warmup_daily_cap(
        today, ramp.start_date, ramp.initial_daily_cap, ramp.daily_growth_factor, sub.budgets.per_day
    )


def warmup_day(sub: SubdomainConfig, today: date) -> int | None:
    """Day number of the ramp (1 on the start date), or None without warm-up / once complete."""
    if sub.warm_up is None or daily_limit(sub, today) >= sub.budgets.per_day:
        return None
    return (today - sub.warm_up.start_date).days + 1


def send_caps(sub: SubdomainConfig, recipients: list[str], agent_name: str, now: datetime) -> list[SendCap]:
    """Every cap a send of `recipients` by `agent_name` is charged against, now."""
    count = len(recipients)
    # `EmailSendArgs` refuses two spellings of one mailbox in a message; were they to reach
    # here, the mailbox would be charged once per copy it receives.
    mailboxes = Counter(recipient_key(r) for r in recipients)
    domain = sub.domain
    today = now.astimezone(UTC).date()
    day_limit = daily_limit(sub, today)
    ramping = day_limit < sub.budgets.per_day
    caps = [
        SendCap(f"hourly cap of {domain}", "hour", Cap(hour_key(domain), sub.budgets.per_hour, HOUR, now), count),
        SendCap(
            f"warm-up daily cap of {domain} (day {warmup_day(sub, today)} of its ramp)"
            if ramping
            else f"daily cap of {domain}",
            "day",
            Cap(day_key(domain), day_limit, DAY, now),
            count,
        ),
    ]
    domains: Counter[str] = Counter()
    for mailbox, copies in mailboxes.items():
        domains[recipient_domain(mailbox)] += copies
    for to_domain, units in sorted(domains.items()):
        limit = sub.recipient_domain_hourly_cap(to_domain)
        if limit is not None:
            caps.append(
                SendCap(
                    f"hourly cap for recipients at {to_domain}",
                    "recipient_domain_hour",
                    Cap(recipient_domain_key(domain, to_domain), limit, HOUR, now),
                    units,
                )
            )
    if sub.per_recipient_daily is not None:
        caps.extend(
            SendCap(
                f"daily cap per recipient ({mailbox})",
                "recipient_day",
                Cap(recipient_cap_key(domain, mailbox), sub.per_recipient_daily, DAY, now),
                copies,
            )
            for mailbox, copies in sorted(mailboxes.items())
        )
    if sub.per_agent_daily is not None:
        caps.append(
            SendCap(
                f"daily cap of agent {agent_name}",
                "agent_day",
                Cap(agent_key(domain, agent_name), sub.per_agent_daily, DAY, now),
                count,
            )
        )
    return caps


def reserve_send_budget(session: Session, caps: list[SendCap]) -> BudgetVerdict:
    """Charge every cap its units in one `reserve` call, or nothing."""
    for send_cap in caps:
        if send_cap.units > send_cap.cap.limit:
            return BudgetVerdict(False, impossible=send_cap)
    if reserve(session, [replace(c.cap, units=c.units) for c in caps]).granted:
        return BudgetVerdict(True)
    # Which caps lack room (reserve names only the first it met); the send waits for the last
    # of them to reopen.
    full = tuple(c for c in caps if used(session, c.cap.key, c.cap.window, c.cap.now) + c.units > c.cap.limit) or tuple(
        caps[:1]
    )
    return BudgetVerdict(False, full=full, retry_at=max(c.cap.window_end for c in full))


def first_day_fitting(sub: SubdomainConfig, units: int, today: date) -> date | None:
    """The first UTC day from `today` whose daily cap (warm-up included) is at least `units`."""
    if units > sub.budgets.per_day:
        return None
    for offset in range(_WARMUP_HORIZON_DAYS):
        day = today + timedelta(days=offset)
        if daily_limit(sub, day) >= units:
            return day
    return None


def start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class CapUsage:
    name: str
    kind: str
    key: str
    used: int
    limit: int
    resets_at: datetime


def usage(session: Session, send_cap: SendCap) -> CapUsage:
    cap = send_cap.cap
    return CapUsage(
        name=send_cap.name,
        kind=send_cap.kind,
        key=cap.key,
        used=used(session, cap.key, cap.window, cap.now),
        limit=cap.limit,
        resets_at=cap.window_end,
    )
