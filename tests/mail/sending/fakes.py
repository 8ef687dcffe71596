"""A `MailGate` for tests of the tool alone, without the database ledger."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from outbox.mail.addresses import recipient_key
from outbox.mail.sending.delivery import RecipientResult
from outbox.mail.sending.gate import Admitted, SendAttempt
from outbox.mail.sending.message import EmailSendArgs
from outbox.toolkit.base import ExecutionContext


class AllowAllGate:
    """Admits everything and remembers results in memory. For tests of the mail layer only."""

    def __init__(self, suppressed: Mapping[str, str] | None = None) -> None:
        self.suppressed = {recipient_key(address): reason for address, reason in (suppressed or {}).items()}
        self.attempts: list[SendAttempt] = []
        self._settled: dict[str, dict[str, RecipientResult]] = {}
        self._lock = threading.Lock()

    def settled_recipients(self, ctx: ExecutionContext) -> Mapping[str, RecipientResult]:
        with self._lock:
            return dict(self._settled.get(ctx.action_id, {}))

    def admit(
        self,
        ctx: ExecutionContext,
        args: EmailSendArgs,
        recipients: Sequence[str],
    ) -> Admitted:
        keys = {r: recipient_key(r) for r in recipients}
        return Admitted({r: self.suppressed[key] for r, key in keys.items() if key in self.suppressed})

    def record_results(
        self,
        ctx: ExecutionContext,
        args: EmailSendArgs,
        attempt: SendAttempt,
    ) -> None:
        with self._lock:
            self.attempts.append(attempt)
            settled = self._settled.setdefault(ctx.action_id, {})
            settled.update({r: res for r, res in attempt.results.items() if not res.retryable})
