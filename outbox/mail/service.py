"""Mail operations for admins, the API and the CLI: kill switches, suppressions, status, checks.

Each change is one transaction with its audit event, so the audit log says who paused what, who
unsuppressed whom, and when the breaker or a DNS check changed whether a subdomain may send.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from outbox.agents.models import Agent
from outbox.audit.service import record_event
from outbox.budgets.service import window_start
from outbox.mail import repository
from outbox.mail.addresses import RecipientAddressError, recipient_key
from outbox.mail.budgets.db_gate import describe_pause
from outbox.mail.budgets.ledger import (
    DAY,
    HOUR,
    daily_limit,
    key_prefix,
    recipient_domain_key,
    send_caps,
    usage,
    warmup_day,
)
from outbox.mail.config import MailConfig, SubdomainConfig
from outbox.mail.dns.checks import SubdomainDnsReport
from outbox.mail.dns.verdicts import blocks_sending, check_and_store, checks_due, run_due_checks
from outbox.mail.environment import load_configured_mail
from outbox.mail.feedback.breakers import read_breaker
from outbox.mail.feedback.ingest import IngestReport, ProviderEvent, from_dsn, from_provider_event, ingest, suppress
from outbox.mail.models import EVERY_SUBDOMAIN, MailPause, PauseCause, PauseScope, SuppressionReason
from outbox.mail.schemas import (
    BreakerOut,
    CapUsageOut,
    DnsOut,
    MailStatusOut,
    PauseChangeOut,
    PauseOut,
    SubdomainStatusOut,
    SuppressionIn,
    SuppressionOut,
    SuppressionPage,
    WarmUpOut,
)
from outbox.metrics import BudgetUse, Reading, SubdomainHealth
from outbox.sqltypes import utcnow
from outbox.toolkit.base import Configured

if TYPE_CHECKING:
    from outbox.runtime import Runtime  # annotations only: the edges hand the runtime in

ALL_TARGET = "*"


class MailOperationError(ValueError):
    """A request the mail service refuses; the message says why, for a person or an agent."""


class MailNotConfiguredError(MailOperationError):
    pass


def mail_config(runtime: Runtime) -> MailConfig:
    """The configuration the running policy's `email.send` uses (else the file, freshly read)."""
    tool = runtime.policy.current.tools.get("email.send")
    config = tool.config if isinstance(tool, Configured) else None
    if isinstance(config, MailConfig):
        return config
    loaded = load_configured_mail(runtime.settings)
    if loaded is None:
        raise MailNotConfiguredError("mail is not configured: there is no mail.yaml in the policy directory")
    return loaded


def _subdomain(config: MailConfig, domain: str) -> SubdomainConfig:
    sub = config.subdomain(domain)
    if sub is None:
        known = ", ".join(config.allowed_sender_domains())
        raise MailOperationError(f"{domain} is not a configured sending subdomain (configured: {known})")
    return sub


# --- Kill switches -------------------------------------------------------------------------


def _scope_of(
    config: MailConfig, session: Session, *, subdomain: str | None, agent: str | None
) -> tuple[PauseScope, str]:
    if subdomain is not None:
        return PauseScope.SUBDOMAIN, _subdomain(config, subdomain).domain
    if agent is not None:
        if session.exec(select(Agent.id).where(col(Agent.name) == agent)).first() is None:
            raise MailOperationError(f"there is no agent named {agent!r}")
        return PauseScope.AGENT, agent
    return PauseScope.ALL, ALL_TARGET


def pause(
    runtime: Runtime, *, subdomain: str | None = None, agent: str | None = None, reason: str, actor: str
) -> PauseChangeOut:
    """Stop mail at once (all of it, one subdomain's, or one agent's). Sends already handed to
    the relay finish; every later one is deferred and waits for `resume`."""
    config = mail_config(runtime)
    with runtime.db.session() as session:
        scope, target = _scope_of(config, session, subdomain=subdomain, agent=agent)
        row = MailPause(
            scope=scope.value,
            target=target,
            cause=PauseCause.MANUAL.value,
            reason=reason,
            paused_by=actor,
            paused_at=utcnow(),
        )
        added = repository.add_pause(session, row)
        if added:
            record_event(
                session,
                event_type="mail.paused",
                actor=actor,
                data={"scope": scope.value, "target": target, "reason": reason},
            )
            detail = describe_pause(row)
        else:
            existing = session.get(MailPause, (scope.value, target))
            detail = "already paused: " + (describe_pause(existing) if existing else "")
    return PauseChangeOut(scope=scope.value, target=target, changed=added, detail=detail)


def resume(
    runtime: Runtime,
    *,
    subdomain: str | None = None,
    agent: str | None = None,
    actor: str,
    reason: str | None = None,
) -> PauseChangeOut:
    """Lift a pause. Resuming a subdomain also resets its breaker's count (a tripped breaker is
    resumed this way: it is an admin's decision). Deferred mail goes at its next look. The
    reason, when given, is recorded with who resumed and what the pause was."""
    config = mail_config(runtime)
    now = utcnow()
    with runtime.db.session() as session:
        scope, target = _scope_of(config, session, subdomain=subdomain, agent=agent)
        removed = repository.remove_pause(session, scope, target)
        if scope is PauseScope.SUBDOMAIN:
            repository.reset_breaker(session, target, now)
        if removed is not None:
            record_event(
                session,
                event_type="mail.resumed",
                actor=actor,
                data={
                    "scope": scope.value,
                    "target": target,
                    "cause": removed.cause,
                    "paused_by": removed.paused_by,
                    "reason": reason,
                },
            )
    detail = f"resumed (was: {describe_pause(removed)})" if removed else "was not paused"
    return PauseChangeOut(scope=scope.value, target=target, changed=removed is not None, detail=detail)


# --- Suppressions --------------------------------------------------------------------------


def _mailbox(recipient: str) -> str:
    """The recipient key suppressions are stored under (any spelling finds the one entry)."""
    try:
        return recipient_key(recipient.strip())
    except RecipientAddressError as exc:
        raise MailOperationError(f"{recipient!r} is not an email address: {exc}") from None


def add_suppression(runtime: Runtime, request: SuppressionIn, actor: str) -> tuple[SuppressionOut, bool]:
    config = mail_config(runtime)
    scope = _subdomain(config, request.subdomain).domain if request.subdomain else EVERY_SUBDOMAIN
    with runtime.db.session() as session:
        added = suppress(
            session,
            recipient=request.recipient,
            scope=scope,
            reason=request.reason,
            source=actor,
            detail=request.detail,
            actor=actor,
        )
        rows = repository.list_suppressions(session, key=_mailbox(request.recipient), scope=scope, limit=1)
    return SuppressionOut.of(rows[0]), added


def remove_suppression(runtime: Runtime, recipient: str, subdomain: str | None, actor: str) -> list[SuppressionOut]:
    """Remove the recipient's suppression for one scope (`subdomain`, or "*" for every
    subdomain), or all of their suppressions when `subdomain` is None."""
    key = _mailbox(recipient)
    with runtime.db.session() as session:
        rows = repository.remove_suppression(session, key, subdomain)
        for row in rows:
            record_event(
                session,
                event_type="mail.unsuppressed",
                actor=actor,
                data={"recipient": row.recipient, "scope": row.scope, "reason": row.reason},
            )
    return [SuppressionOut.of(row) for row in rows]


def list_suppressions(
    runtime: Runtime,
    *,
    recipient: str | None = None,
    subdomain: str | None = None,
    reason: SuppressionReason | None = None,
    limit: int = 100,
    offset: int = 0,
) -> SuppressionPage:
    key = None if recipient is None else _mailbox(recipient)
    with runtime.db.session() as session:
        rows = repository.list_suppressions(
            session,
            key=key,
            scope=subdomain,
            reason=reason.value if reason else None,
            limit=limit,
            offset=offset,
        )
        counts = repository.suppression_counts(session)
    return SuppressionPage(items=[SuppressionOut.of(r) for r in rows], counts=counts)


# --- Feedback ------------------------------------------------------------------------------


def ingest_events(runtime: Runtime, events: Iterable[ProviderEvent], actor: str) -> IngestReport:
    return ingest(runtime.db, mail_config(runtime), [from_provider_event(e) for e in events], actor)


def ingest_dsn(runtime: Runtime, raw: bytes, actor: str) -> IngestReport:
    return ingest(runtime.db, mail_config(runtime), from_dsn(raw), actor)


# --- DNS -----------------------------------------------------------------------------------


def check_dns(runtime: Runtime) -> list[SubdomainDnsReport]:
    """Check every subdomain now and store the verdicts (every process sees them)."""
    return check_and_store(runtime.db, mail_config(runtime), runtime.settings)


# --- Status --------------------------------------------------------------------------------


def _cap_out(name: str, kind: str, key: str, used: int, limit: int, resets_at: datetime) -> CapUsageOut:
    return CapUsageOut(name=name, kind=kind, key=key, used=used, limit=limit, resets_at=resets_at)


def _recipient_domain_caps(session: Session, sub: SubdomainConfig, now: datetime) -> list[CapUsageOut]:
    """Every recipient domain with an hourly cap: the configured ones and any charged this hour."""
    hour_start = window_start(now, HOUR)
    used_hour = repository.counters_with_prefix(session, key_prefix(sub.domain) + "domain:", hour_start)
    seen_domains = {key.split(":")[3] for key in used_hour}
    caps = []
    for recipient_domain in sorted(set(sub.recipient_domain_hourly) | seen_domains):
        limit = sub.recipient_domain_hourly_cap(recipient_domain)
        if limit is None:
            continue
        key = recipient_domain_key(sub.domain, recipient_domain)
        caps.append(
            _cap_out(
                f"hourly cap for recipients at {recipient_domain}",
                "recipient_domain_hour",
                key,
                used_hour.get(key, 0),
                limit,
                hour_start + HOUR,
            )
        )
    return caps


def _daily_caps(session: Session, sub: SubdomainConfig, now: datetime) -> tuple[list[CapUsageOut], int]:
    """Each agent's daily cap in use, and how many recipients have reached theirs today."""
    day_start = window_start(now, DAY)
    prefix = key_prefix(sub.domain)
    agents = []
    recipients_at_cap = 0
    for key, value in sorted(repository.counters_with_prefix(session, prefix, day_start).items()):
        if sub.per_agent_daily is not None and key.startswith(prefix + "agent:"):
            agent = key.removeprefix(prefix + "agent:").removesuffix(":day")
            agents.append(
                _cap_out(f"daily cap of agent {agent}", "agent_day", key, value, sub.per_agent_daily, day_start + DAY)
            )
        elif sub.per_recipient_daily is not None and key.startswith(prefix + "recipient:"):
            recipients_at_cap += value >= sub.per_recipient_daily
    return agents, recipients_at_cap


def _warm_up_out(sub: SubdomainConfig, now: datetime) -> WarmUpOut | None:
    if not sub.warm_up:
        return None
    today = now.astimezone(UTC).date()
    return WarmUpOut(
        start_date=sub.warm_up.start_date,
        day=warmup_day(sub, today),
        daily_cap_today=daily_limit(sub, today),
        full_daily_cap=sub.budgets.per_day,
    )


def _breaker_out(session: Session, sub: SubdomainConfig, now: datetime, *, tripped: bool) -> BreakerOut:
    reading = read_breaker(session, sub, now)
    return BreakerOut(
        tripped=tripped,
        window_hours=sub.breaker.window_hours,
        since=reading.since,
        sent=reading.sent,
        bounces=reading.bounces,
        complaints=reading.complaints,
        bounce_rate=round(reading.bounce_rate, 6),
        complaint_rate=round(reading.complaint_rate, 6),
        minimum_sample=reading.minimum_sample,
        bounce_threshold=reading.bounce_threshold,
        complaint_threshold=reading.complaint_threshold,
    )


def _dns_out(session: Session, sub: SubdomainConfig) -> DnsOut:
    state = repository.subdomain_state(session, sub.domain)
    dns_ok = state.dns_ok if state else None
    return DnsOut(
        enforced=sub.enforce_dns_checks,
        development=sub.development,
        ok=dns_ok,
        blocked=blocks_sending(sub.enforce_dns_checks, dns_ok),
        reason=state.dns_reason if state else None,
        checked_at=state.dns_checked_at if state else None,
        checks=list((state.dns_report or {}).get("checks", [])) if state else [],
    )


def _subdomain_status(
    session: Session, runtime: Runtime, sub: SubdomainConfig, pauses: list[MailPause], now: datetime
) -> SubdomainStatusOut:
    caps = [usage(session, c) for c in send_caps(sub, [], "-", now) if c.kind in ("hour", "day")]
    agents, recipients_at_cap = _daily_caps(session, sub, now)
    own = [
        p
        for p in pauses
        if p.scope == PauseScope.ALL.value or (p.scope == PauseScope.SUBDOMAIN.value and p.target == sub.domain)
    ]
    tripped = any(p.cause == PauseCause.BREAKER.value and p.scope == PauseScope.SUBDOMAIN.value for p in own)
    dns = _dns_out(session, sub)
    reasons = [describe_pause(p) for p in own]
    if dns.blocked:
        reasons.append(f"blocked: the DNS check failed ({dns.reason})")  # blocked: a stored verdict exists
    if sub.enforce_dns_checks and dns.ok is None:
        reasons.append("DNS not checked yet: the first send checks it")
    return SubdomainStatusOut(
        domain=sub.domain,
        sending="paused" if own else ("blocked" if dns.blocked else "ok"),
        reasons=reasons,
        caps=[_cap_out(c.name, c.kind, c.key, c.used, c.limit, c.resets_at) for c in caps],
        recipient_domains=_recipient_domain_caps(session, sub, now),
        agents=agents,
        per_recipient_daily=sub.per_recipient_daily,
        recipients_at_daily_cap=recipients_at_cap,
        warm_up=_warm_up_out(sub, now),
        send_window=sub.send_window.model_dump(mode="json") if sub.send_window else None,
        breaker=_breaker_out(session, sub, now, tripped=tripped),
        dns=dns,
        pauses=[PauseOut.of(p) for p in own],
    )


def mail_status(runtime: Runtime) -> MailStatusOut:
    """Usage against every cap, warm-up day, breaker, pauses and DNS, per subdomain."""
    config = mail_config(runtime)
    now = utcnow()
    with runtime.db.session() as session:
        pauses = repository.list_pauses(session)
        subdomains = [_subdomain_status(session, runtime, sub, pauses, now) for sub in config.subdomains]
        counts = repository.suppression_counts(session)
    everything = next((p for p in pauses if p.scope == PauseScope.ALL.value), None)
    return MailStatusOut(
        generated_at=now,
        all_paused=PauseOut.of(everything) if everything else None,
        agents_paused=[PauseOut.of(p) for p in pauses if p.scope == PauseScope.AGENT.value],
        subdomains=subdomains,
        suppressions=counts,
    )


def collect_mail_metrics(runtime: Runtime) -> list[Reading]:
    """The `outbox_mail_*` families for /metrics (registered with outbox.metrics)."""
    status = mail_status(runtime)
    readings: list[Reading] = []
    for sub in status.subdomains:
        for cap in sub.caps:
            readings.append(BudgetUse(sub.domain, cap.kind, cap.used, cap.limit))
        readings.append(
            SubdomainHealth(
                subdomain=sub.domain,
                breaker_tripped=sub.breaker.tripped,
                paused=sub.sending == "paused",
                dns_ok=sub.dns.ok,
                detail="; ".join(sub.reasons),
            )
        )
    return readings


def dns_checks_due(runtime: Runtime) -> bool:
    """Whether a subdomain's periodic DNS check is due (False when mail is not configured)."""
    try:
        config = mail_config(runtime)
    except MailNotConfiguredError:
        return False
    return checks_due(runtime.db, config, runtime.settings)


def run_due_dns_checks(runtime: Runtime) -> int:
    """Check the subdomains this process claims for the current interval; return how many."""
    try:
        config = mail_config(runtime)
    except MailNotConfiguredError:
        return 0
    return run_due_checks(runtime.db, config, runtime.settings)
