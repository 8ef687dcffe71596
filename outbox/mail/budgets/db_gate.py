"""`DatabaseMailGate`: the `MailGate` the pipeline gives `email.send`, on the database ledger.

`admit` is asked once a message is built, signed and self-verified, just before delivery. In
order, cheapest first, each answer valid across every worker because it comes from the database:

1. kill switches (all mail, the subdomain, the agent) and a tripped breaker → deferred, looked
   at again after `mail_pause_recheck_seconds`: paused mail waits, nothing is lost;
2. a subdomain whose DNS check fails (with `enforce_dns_checks`) → deferred the same way;
3. suppressed recipients → left out of the envelope, recorded as settled;
4. budgets: every cap charged at once (`outbox.mail.budgets.ledger`); over a cap → deferred to the
   moment the refusing window reopens, the cap named in the reason.

A recipient is charged once per action, however many attempts it takes: the charge and the
recipient's `mail_deliveries` row are written in one transaction, and a retry charges only
recipients without a row. So a 4xx retried later, or an attempt re-run after a worker died
mid-send, never counts twice against a cap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session

from outbox.config import Settings
from outbox.db import Database
from outbox.mail import repository
from outbox.mail.budgets.ledger import BudgetVerdict, first_day_fitting, reserve_send_budget, send_caps, start_of
from outbox.mail.config import MailConfig, SubdomainConfig
from outbox.mail.dns.verdicts import blocks_sending, dns_verdict
from outbox.mail.feedback.breakers import evaluate_breaker
from outbox.mail.models import DeliveryOutcome, MailPause, PauseCause, PauseScope
from outbox.mail.sending.delivery import RecipientResult
from outbox.mail.sending.gate import Admitted, SendAttempt
from outbox.mail.sending.message import EmailSendArgs, message_id_for
from outbox.sqltypes import utcnow
from outbox.toolkit.base import Deferred, ExecutionContext, Failed


def classify(result: RecipientResult) -> DeliveryOutcome:
    if result.delivered:
        return DeliveryOutcome.DELIVERED
    if result.stage == "suppressed":
        return DeliveryOutcome.SUPPRESSED
    if result.permanent:
        return DeliveryOutcome.BOUNCED if result.stage in ("rcpt", "data") else DeliveryOutcome.REFUSED
    return DeliveryOutcome.RETRYING


def describe_pause(pause: MailPause) -> str:
    what = {
        PauseScope.ALL.value: "all agent mail is paused",
        PauseScope.SUBDOMAIN.value: f"mail from {pause.target} is paused",
        PauseScope.AGENT.value: f"mail from agent {pause.target} is paused",
    }[pause.scope]
    by = "by its circuit breaker" if pause.cause == PauseCause.BREAKER.value else f"by {pause.paused_by}"
    return f"{what} {by} since {pause.paused_at:%Y-%m-%d %H:%M} UTC ({pause.reason})"


class DatabaseMailGate:
    def __init__(
        self,
        db: Database,
        config: MailConfig,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.config = config
        self.settings = settings
        self.clock = clock

    @property
    def recheck(self) -> timedelta:
        return timedelta(seconds=self.settings.mail_pause_recheck_seconds)

    def settled_recipients(self, ctx: ExecutionContext) -> Mapping[str, RecipientResult]:
        # One statement outside any transaction and without the write lock: the rows are this
        # action's own, written by earlier attempts that have committed.
        with self.db.single_reads() as connection:
            rows = repository.delivery_answers(connection, ctx.action_id)
        return {
            row.recipient: RecipientResult(row.code, row.message or "", row.stage)
            for row in rows
            if DeliveryOutcome(row.outcome).settled and row.stage is not None
        }

    def admit(
        self, ctx: ExecutionContext, args: EmailSendArgs, recipients: Sequence[str]
    ) -> Admitted | Deferred | Failed | None:
        sub = self.config.subdomain(args.sender.domain)
        if sub is None:  # the tool refuses unknown senders before asking
            return Failed(f"{args.sender.domain} is not a configured sending subdomain", retryable=False)
        now = self.clock()
        try:
            answer = self.db.write(lambda session: self._admission(session, ctx, sub, recipients, now))
            if isinstance(answer, _Unchecked):
                # Never checked and it must pass: check DNS now, outside the transaction (it asks
                # the network), then admit on that verdict.
                dns = dns_verdict(self.db, self.config, self.settings, sub, None)
                if dns.blocks:
                    return self._dns_blocked(sub, dns.reason, now)
                answer = self.db.write(
                    lambda session: self._admission(session, ctx, sub, recipients, now, dns_checked=True)
                )
        except _OverBudgetError as refused:
            return self._over_budget(sub, refused.verdict, refused.units, now)
        assert not isinstance(answer, _Unchecked)  # dns_checked skips the stored verdict
        return answer

    def _dns_blocked(self, sub: SubdomainConfig, reason: str | None, now: datetime) -> Deferred:
        return Deferred(
            now + self.recheck,
            f"{sub.domain} is blocked from sending: its DNS check failed ({reason}); "
            "the message waits until a check passes",
        )

    def _admission(
        self,
        session: Session,
        ctx: ExecutionContext,
        sub: SubdomainConfig,
        recipients: Sequence[str],
        now: datetime,
        *,
        dns_checked: bool = False,
    ) -> Admitted | Deferred | _Unchecked:
        """The whole gate in one write transaction: pauses, the DNS verdict, suppressions, the
        recipients' rows and every budget charge. `_Unchecked` when DNS must be checked first;
        raises `_OverBudgetError` so that the transaction rolls the rows back."""
        pauses = repository.pause_rows_stopping(session, sub.domain, ctx.agent_name)
        if pauses:
            reasons = "; ".join(describe_pause(p) for p in pauses)
            return Deferred(now + self.recheck, f"{reasons}; the message waits and is tried again")
        # A subdomain that does not enforce its DNS checks is never blocked: no need to read.
        if sub.enforce_dns_checks and not dns_checked:
            state = repository.dns_state_row(session, sub.domain)
            if state is None or state.dns_checked_at is None:
                return _Unchecked()
            if blocks_sending(True, state.dns_ok):
                return self._dns_blocked(sub, state.dns_reason, now)
        suppressed = repository.suppression_rows_among(session, recipients, sub.domain)
        new = repository.insert_new_deliveries(
            session, _pending_rows(ctx, sub, [r for r in recipients if r not in suppressed], now)
        )
        # Only recipients without a row are charged: an earlier attempt charged the others.
        to_charge = [r for r in recipients if r in new]
        if to_charge:
            verdict = reserve_send_budget(session, send_caps(sub, to_charge, ctx.agent_name, now))
            if not verdict.granted:
                raise _OverBudgetError(verdict, len(to_charge))
        return Admitted(
            {
                recipient: f"suppressed ({row.reason}"
                + (f" from {row.scope}" if row.scope != "*" else "")
                + f", since {row.created_at:%Y-%m-%d})"
                for recipient, row in suppressed.items()
            }
        )

    def _over_budget(
        self, sub: SubdomainConfig, verdict: BudgetVerdict, units: int, now: datetime
    ) -> Deferred | Failed:
        impossible = verdict.impossible
        if impossible is not None:
            if impossible.kind == "day":
                day = first_day_fitting(sub, units, now.astimezone(UTC).date())
                if day is not None:
                    return Deferred(
                        start_of(day),
                        f"the {impossible.name} is {impossible.cap.limit} today and this message has "
                        f"{units} recipient(s); the ramp allows it from {day.isoformat()}",
                    )
            return Failed(
                f"this message has {impossible.units} recipient(s) counted against the "
                f"{impossible.name} of {impossible.cap.limit}: it can never fit; split it over several actions",
                retryable=False,
            )
        assert verdict.retry_at is not None
        caps = " and ".join(f"the {c.name} ({c.cap.limit} per {_per(c.cap.window)})" for c in verdict.full)
        return Deferred(
            verdict.retry_at,
            f"over budget: {caps} {'are' if len(verdict.full) > 1 else 'is'} used up; "
            f"deferred until {verdict.retry_at:%Y-%m-%d %H:%M} UTC, "
            "when its window reopens",
        )

    def record_results(self, ctx: ExecutionContext, args: EmailSendArgs, attempt: SendAttempt) -> None:
        sub = self.config.subdomain(attempt.subdomain)
        now = self.clock()
        rows = [
            {
                "action_id": ctx.action_id,
                "recipient": recipient,
                "subdomain": attempt.subdomain,
                "agent_name": ctx.agent_name,
                "message_id": attempt.message_id,
                "outcome": classify(result).value,
                "code": result.code,
                "message": result.message,
                "stage": result.stage,
            }
            for recipient, result in attempt.results.items()
        ]
        bounced = any(row["outcome"] == DeliveryOutcome.BOUNCED.value for row in rows)

        def record(session: Session) -> None:
            repository.record_answers(session, rows, now)
            if bounced and sub is not None:
                evaluate_breaker(session, sub, now)

        self.db.write(record)


class _OverBudgetError(Exception):
    """A cap refused the charge: raised out of the admission transaction so that it rolls back
    the recipients' rows it inserted."""

    def __init__(self, verdict: BudgetVerdict, units: int) -> None:
        super().__init__("over budget")
        self.verdict = verdict
        self.units = units


class _Unchecked:
    """`_admission`'s answer when the subdomain must pass its DNS check and was never checked."""


def _per(window: timedelta) -> str:
    return "hour" if window == timedelta(hours=1) else "day"


def _pending_rows(
    ctx: ExecutionContext, sub: SubdomainConfig, recipients: Sequence[str], now: datetime
) -> list[dict[str, Any]]:
    """The delivery row of each recipient to be charged and sent to, before any attempt."""
    message_id = message_id_for(ctx.action_id, sub.domain)
    return [
        {
            "action_id": ctx.action_id,
            "recipient": recipient,
            "subdomain": sub.domain,
            "agent_name": ctx.agent_name,
            "message_id": message_id,
            "outcome": DeliveryOutcome.PENDING.value,
            "charged_at": now,
            "attempts": 0,
            "code": None,
            "message": None,
            "stage": None,
            "at": now,
        }
        for recipient in recipients
    ]
