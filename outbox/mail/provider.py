"""`email.send` in the pipeline: the library tool, wired to the database ledger.

Built by the tool registry on every policy load from `mail.yaml` (no file, no tool). What the
pipeline adds to the library's `EmailSendTool`:

- the `DatabaseMailGate` (budgets, suppression, breakers, kill switches, DNS blocks);
- an expiry: a send that cannot go within `mail_max_deferral_hours` of its submission (budget
  windows, send windows and pauses included) fails with the reason it was waiting for, instead
  of being deferred past the point where it is still wanted;
- one more policy target for bulk mail, act `bulk`, so that policy can treat bulk mail apart
  (e.g. require approval) while every recipient stays one `send` target;
- `target_patterns()` for static policy analysis, and a preview for approvers.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from outbox import metrics
from outbox.actions.models import Action
from outbox.db import Database
from outbox.mail.budgets.db_gate import DatabaseMailGate
from outbox.mail.config import MailConfig
from outbox.mail.environment import key_base_dir, load_configured_mail, unsubscribe_secret
from outbox.mail.sending.delivery import SmtpDelivery
from outbox.mail.sending.gate import MailGate
from outbox.mail.sending.message import EmailSendArgs
from outbox.mail.sending.tool import EmailSendTool
from outbox.mail.service import collect_mail_metrics
from outbox.sqltypes import utcnow
from outbox.toolkit.base import Deferred, ExecutionContext, Failed, Target, ToolOutcome
from outbox.toolkit.registry import ToolServices

BULK_ACT = "bulk"

# One delivery (per-thread loops and relay connections) per process, kept across policy reloads,
# and closed (QUIT to every relay) when the process exits.
_DELIVERY = SmtpDelivery()
atexit.register(_DELIVERY.close)


def shared_delivery() -> SmtpDelivery:
    return _DELIVERY


class PipelineEmailSendTool(EmailSendTool):
    destructive_acts: ClassVar[frozenset[str]] = frozenset({"send", BULK_ACT})

    def __init__(
        self,
        config: MailConfig,
        *,
        gate: MailGate,
        unsubscribe_secret: bytes,
        db: Database,
        max_deferral: timedelta,
        delivery: SmtpDelivery | None = None,
        key_base_dir: Path | None = None,
        clock: Callable[[], datetime] = utcnow,
        secret_problem: str | None = None,
    ) -> None:
        super().__init__(
            config,
            gate=gate,
            unsubscribe_secret=unsubscribe_secret,
            delivery=delivery,
            key_base_dir=key_base_dir,
            clock=clock,
        )
        self.db = db
        self.max_deferral = max_deferral
        # Why there is no usable unsubscribe secret (None: there is one). Bulk mail, the only
        # mail that carries signed unsubscribe links, is then refused before anything is signed.
        self.secret_problem = secret_problem

    def targets(self, args: BaseModel) -> list[Target]:
        targets = super().targets(args)
        assert isinstance(args, EmailSendArgs)
        if args.category == "bulk":
            targets += [Target(t.object, BULK_ACT) for t in targets]
        return targets

    def target_patterns(self) -> list[Target]:
        """`mail:<subdomain>/{recipient}` for each configured subdomain, acts send and bulk."""
        return [
            Target(f"mail:{domain}/{{recipient}}", act)
            for domain in self.config.allowed_sender_domains()
            for act in ("send", BULK_ACT)
        ]

    def preview(self, args: BaseModel) -> dict[str, Any]:
        """What an approver sees: the message as the recipients will read it."""
        assert isinstance(args, EmailSendArgs)
        return {
            "from": args.sender.model_dump(exclude_none=True),
            "to": args.recipients(),
            "subject": args.subject,
            "category": args.category,
            "text": args.text,
            "html": args.html,
        }

    def execute(self, ctx: ExecutionContext, args: BaseModel) -> ToolOutcome:
        if self.secret_problem is not None and isinstance(args, EmailSendArgs) and args.category == "bulk":
            return Failed(f"bulk mail needs signed unsubscribe links: {self.secret_problem}", retryable=False)
        outcome = super().execute(ctx, args)
        if isinstance(outcome, Deferred):
            return self._within_expiry(ctx, outcome)
        return outcome

    def _within_expiry(self, ctx: ExecutionContext, deferred: Deferred) -> Deferred | Failed:
        with self.db.session() as session:
            action = session.get(Action, ctx.action_id)
        if action is None:  # pragma: no cover - the pipeline runs actions it has
            return deferred
        expires = action.created_at + self.max_deferral
        if deferred.not_before <= expires:
            return deferred
        return Failed(
            f"{deferred.reason}; it cannot go before {deferred.not_before:%Y-%m-%d %H:%M} UTC, after its "
            f"expiry at {expires:%Y-%m-%d %H:%M} UTC ({self.max_deferral.total_seconds() / 3600:g} h after "
            "submission), so it was not sent",
            retryable=False,
        )


def provide_mail_tools(policy_dir: Path, services: ToolServices) -> list[PipelineEmailSendTool]:
    settings = services.settings
    config = load_configured_mail(settings, policy_dir)
    if config is None:
        return []
    metrics.register_collector("mail", collect_mail_metrics)
    # A process without the secret (a production CLI run without OUTBOX_UNSUBSCRIBE_SECRET)
    # still loads the policy; servers and workers refuse to start without it
    # (Settings.check_production_safety), and this tool refuses bulk mail. The stand-in key
    # satisfies the library's constructor and never signs anything.
    secret_problem: str | None = None
    try:
        secret = unsubscribe_secret(settings)
    except ValueError as exc:
        secret, secret_problem = os.urandom(32), str(exc)
    return [
        PipelineEmailSendTool(
            config,
            gate=DatabaseMailGate(services.db, config, settings),
            unsubscribe_secret=secret,
            db=services.db,
            max_deferral=timedelta(hours=settings.mail_max_deferral_hours),
            delivery=shared_delivery(),
            key_base_dir=key_base_dir(settings),
            secret_problem=secret_problem,
        )
    ]
