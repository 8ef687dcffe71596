"""`MailGate`: the checks that need shared state, injected into `EmailSendTool`.

Budgets, suppression, circuit breakers and kill switches are decided across all workers, on the
database ledger, at the moment a message is about to leave. The tool asks the gate just before
delivery and tells it what happened right after; it never keeps that state itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from outbox.mail.sending.delivery import RecipientResult
from outbox.mail.sending.message import EmailSendArgs
from outbox.toolkit.base import Deferred, ExecutionContext, Failed


@dataclass(frozen=True, slots=True)
class Admitted:
    """Send now. `suppressed` recipients (address → reason) are left out of the envelope and
    recorded as permanently failed; the others are sent to."""

    suppressed: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SendAttempt:
    """One attempt's outcome, handed to `MailGate.record_results`."""

    subdomain: str
    dkim_selector: str
    message_id: str
    envelope_from: str
    # The exact bytes sent (signed); empty when every recipient was suppressed.
    mime: bytes
    # This attempt's result for every recipient it covered, suppressed ones included.
    results: Mapping[str, RecipientResult]
    tls: bool


class MailGate(Protocol):
    """Implemented by the pipeline on its database (`outbox.mail.budgets.db_gate`)."""

    def settled_recipients(self, ctx: ExecutionContext) -> Mapping[str, RecipientResult]:
        """Recipients an earlier attempt of this action settled (delivered or permanently
        failed), as recorded by `record_results`. A retry sends only to the others."""
        ...

    def admit(
        self, ctx: ExecutionContext, args: EmailSendArgs, recipients: Sequence[str]
    ) -> Admitted | Deferred | Failed | None:
        """Called once the message is built, signed and self-verified, just before delivery.

        Check the kill switches, breaker and suppression list, and charge every budget for
        `recipients` atomically. None (or `Admitted()`) means send to all of them; `Deferred`
        means a budget or pause says not before `not_before`; `Failed` refuses for good.
        """
        ...

    def record_results(self, ctx: ExecutionContext, args: EmailSendArgs, attempt: SendAttempt) -> None:
        """Called after delivery: persist per-recipient results (so `settled_recipients` sees
        them), refund budget charged for recipients not delivered if the ledger wants to, and
        count bounces towards the breaker."""
        ...
