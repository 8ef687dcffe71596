"""DNS verdicts, stored so that every replica and worker sees a blocked subdomain.

`check_mail_dns` (the library) asks DNS; this module runs it for the pipeline and keeps the result
in `mail_subdomain_state`. A subdomain with `enforce_dns_checks` whose last verdict is not ok is
blocked: its mail is deferred (and looked at again every `mail_pause_recheck_seconds`) until a
check passes. Checks run when a server starts, then every `mail_dns_check_interval_seconds`,
claimed in the database so that one process checks each subdomain per interval; a worker that
finds no verdict at all checks before it sends.

A `development` subdomain is never checked, here or anywhere: it delivers to the local sink only,
and a lookup for it would only tell a resolver the names of a test setup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from outbox.audit.service import record_event
from outbox.config import Settings
from outbox.db import Database
from outbox.mail import repository
from outbox.mail.config import MailConfig, SubdomainConfig
from outbox.mail.dns.checks import CheckStatus, SubdomainDnsReport, check_subdomain, make_resolver
from outbox.mail.environment import key_base_dir
from outbox.mail.models import MailSubdomainState
from outbox.mail.sending.dkim_signing import DkimKey, DkimKeyError, load_signing_key
from outbox.sqltypes import utcnow

log = structlog.get_logger(__name__)
ACTOR = "mail-dns-check"


@dataclass(frozen=True, slots=True)
class DnsVerdict:
    subdomain: str
    enforced: bool
    ok: bool | None  # None: never checked
    reason: str | None
    checked_at: datetime | None

    @property
    def blocks(self) -> bool:
        return blocks_sending(self.enforced, self.ok)


def blocks_sending(enforced: bool, ok: bool | None) -> bool:
    """The one rule: a subdomain is blocked from sending when it enforces its DNS checks and its
    last verdict failed. Never checked (None) does not block: the first send checks it."""
    return enforced and ok is False


def summary(report: SubdomainDnsReport) -> str:
    failing = [c for c in report.checks if c.status is not CheckStatus.PASS]
    if not failing:
        return "SPF, DKIM and DMARC pass"
    return "; ".join(f"{c.name.upper()} {c.status.value}: {c.reason}" for c in failing)


def checked_subdomains(config: MailConfig) -> list[SubdomainConfig]:
    """The subdomains whose DNS is checked: all but the development ones."""
    return [s for s in config.subdomains if not s.development]


def check_subdomains(
    config: MailConfig,
    settings: Settings,
    subdomains: list[SubdomainConfig] | None = None,
) -> list[SubdomainDnsReport]:
    """Ask DNS about each subdomain (all that are checked, by default). No database involved."""
    wanted = checked_subdomains(config) if subdomains is None else [s for s in subdomains if not s.development]
    if not wanted:
        return []
    dns = make_resolver(settings.dns_resolver, settings.dns_timeout_seconds)
    reports: list[SubdomainDnsReport] = []
    for sub in wanted:
        key: DkimKey | str
        try:
            key = load_signing_key(sub.dkim, key_base_dir(settings))
        except DkimKeyError as exc:
            key = str(exc)
        reports.append(check_subdomain(sub, config, dns, key, now=utcnow))
    return reports


def store_reports(db: Database, config: MailConfig, reports: list[SubdomainDnsReport]) -> None:
    """Keep each verdict; a verdict that changes whether the subdomain may send is audited."""
    for report in reports:
        sub = config.subdomain(report.subdomain)
        reason = summary(report)
        with db.session() as session:
            previous = repository.store_dns_verdict(
                session,
                report.subdomain,
                ok=report.ok,
                reason=reason,
                report=report.model_dump(mode="json"),
                checked_at=report.checked_at,
            )
            if previous is not report.ok:
                enforced = sub is not None and sub.enforce_dns_checks
                event = "mail.dns_passed" if report.ok else "mail.dns_failed"
                record_event(
                    session,
                    event_type=event,
                    actor=ACTOR,
                    data={
                        "subdomain": report.subdomain,
                        "enforced": enforced,
                        "blocked": blocks_sending(enforced, report.ok),
                        "reason": reason,
                    },
                )
        if previous is not report.ok:
            log.info("mail.dns_verdict", subdomain=report.subdomain, ok=report.ok, reason=reason)


def check_and_store(
    db: Database, config: MailConfig, settings: Settings, subdomains: list[SubdomainConfig] | None = None
) -> list[SubdomainDnsReport]:
    reports = check_subdomains(config, settings, subdomains)
    store_reports(db, config, reports)
    return reports


def run_due_checks(
    db: Database,
    config: MailConfig,
    settings: Settings,
    now: Callable[[], datetime] = utcnow,
    subdomains: list[SubdomainConfig] | None = None,
) -> int:
    """Check each subdomain (of `subdomains`, by default all that are checked) this process claims
    for the current interval; return how many."""
    interval = timedelta(seconds=settings.mail_dns_check_interval_seconds)
    claimed: list[SubdomainConfig] = []
    for sub in checked_subdomains(config) if subdomains is None else [s for s in subdomains if not s.development]:
        with db.session() as session:
            if repository.claim_dns_check(session, sub.domain, now(), interval):
                claimed.append(sub)
    if claimed:
        check_and_store(db, config, settings, claimed)
    return len(claimed)


def checks_due(db: Database, config: MailConfig, settings: Settings) -> bool:
    interval = timedelta(seconds=settings.mail_dns_check_interval_seconds)
    with db.session() as session:
        return repository.dns_checks_due(session, [s.domain for s in checked_subdomains(config)], utcnow(), interval)


_UNREAD = object()


def dns_verdict(
    db: Database,
    config: MailConfig,
    settings: Settings,
    sub: SubdomainConfig,
    state: MailSubdomainState | object | None = _UNREAD,
) -> DnsVerdict:
    """The stored verdict (from `state` when the caller has read it already); a subdomain that
    must pass and was never checked is checked now."""
    if state is _UNREAD:
        with db.session() as session:
            state = repository.subdomain_state(session, sub.domain)
    assert state is None or isinstance(state, MailSubdomainState)
    if (state is None or state.dns_checked_at is None) and sub.enforce_dns_checks:
        report = check_and_store(db, config, settings, [sub])[0]
        return DnsVerdict(sub.domain, True, report.ok, summary(report), report.checked_at)
    if state is None:
        return DnsVerdict(sub.domain, sub.enforce_dns_checks, None, None, None)
    return DnsVerdict(sub.domain, sub.enforce_dns_checks, state.dns_ok, state.dns_reason, state.dns_checked_at)
