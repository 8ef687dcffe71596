"""The `email.send` tool: validate against the mail config, then build, sign, verify, deliver.

Order of execution, cheapest refusal first and nothing charged for a message that cannot leave:
send window → build and DKIM-sign → verify our own signature → `MailGate.admit` (budgets,
suppression, breaker, kill switch) → deliver → `MailGate.record_results`.

A retry of an action sends only to the recipients no earlier attempt settled: those delivered and
those refused permanently are never mailed again, the ones that got a 4xx (or no reply) are. The
retry carries the same Message-ID, since it is the same message.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from outbox.mail.addresses import display_name_problem, display_part
from outbox.mail.config import MailConfig, SubdomainConfig
from outbox.mail.sending.delivery import RecipientResult, SmtpDelivery
from outbox.mail.sending.dkim_signing import (
    DkimKeyError,
    DkimSelfCheckError,
    load_signing_key,
    sign_message,
    verify_own_signature,
)
from outbox.mail.sending.gate import Admitted, MailGate, SendAttempt
from outbox.mail.sending.message import EmailSendArgs, build_mime, message_id_for
from outbox.mail.sending.unsubscribe import (
    MIN_SECRET_BYTES,
    list_unsubscribe_headers,
    sign_unsubscribe_token,
)
from outbox.mail.sending.windows import next_allowed
from outbox.sqltypes import utcnow
from outbox.toolkit.base import (
    Deferred,
    ExecutionContext,
    Failed,
    FieldProblem,
    Succeeded,
    Target,
    ToolArgumentsError,
    ToolOutcome,
)

# Reasons name at most this many recipients; the response has every one.
_REASON_RECIPIENTS = 5


def _describe(results: Mapping[str, RecipientResult], addresses: list[str]) -> str:
    shown = [f"{a}: {results[a].code or 'no reply'} {results[a].message}" for a in addresses]
    more = len(shown) - _REASON_RECIPIENTS
    return "; ".join(shown[:_REASON_RECIPIENTS]) + (f"; and {more} more" if more > 0 else "")


class EmailSendTool:
    """`email.send`, configured by `policies/mail.yaml`."""

    name: ClassVar[str] = "email.send"
    description: ClassVar[str] = (
        "Send an email from one of the configured agent sending subdomains. Mail outside the "
        "subdomain's send window or over a budget is deferred, not dropped. Use category "
        "'bulk' (one recipient per action) for anything that is not a direct, expected reply."
    )

    def __init__(
        self,
        config: MailConfig,
        *,
        gate: MailGate,
        unsubscribe_secret: bytes,
        delivery: SmtpDelivery | None = None,
        key_base_dir: Path | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if len(unsubscribe_secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the unsubscribe secret needs at least {MIN_SECRET_BYTES} bytes")
        self.config = config
        self._gate = gate
        self._secret = unsubscribe_secret
        self._delivery = delivery or SmtpDelivery()
        self._key_base_dir = key_base_dir
        self._clock = clock

    def args_schema(self) -> dict[str, Any]:
        return EmailSendArgs.model_json_schema(by_alias=True)

    def parse_args(self, raw: dict[str, Any]) -> EmailSendArgs:
        """Validate the shape (pydantic), then against the mail config (ToolArgumentsError)."""
        _refuse_address_like_names(raw)
        args = EmailSendArgs.model_validate(raw)
        allowed = ", ".join(self.config.allowed_sender_domains())
        domain = args.sender.domain
        if self.config.is_primary(domain):
            raise ToolArgumentsError(
                [FieldProblem("from", "agent mail never uses the primary domain")],
                hint=f"send from an address at one of: {allowed}",
            )
        if self.config.subdomain(domain) is None:
            raise ToolArgumentsError(
                [FieldProblem("from", f"{domain} is not a configured agent sending subdomain")],
                hint=f"send from an address at one of: {allowed}",
            )
        limits = self.config.limits
        count = len(args.recipients())
        if count > limits.max_recipients:
            raise ToolArgumentsError(
                [FieldProblem("to", f"{count} recipients; at most {limits.max_recipients}")],
                hint="split the recipients over several actions",
            )
        if args.body_bytes() > limits.max_body_bytes:
            field = "text" if len(args.text or "") >= len(args.html or "") else "html"
            raise ToolArgumentsError(
                [FieldProblem(field, f"body over {limits.max_body_bytes} bytes")],
                hint="shorten the message or link to the content instead of including it",
            )
        return args

    def targets(self, args: BaseModel) -> list[Target]:
        # Policy sees the mailbox (its recipient key), not the spelling: a rule on
        # `*@example.net` or on `ceo@example.net` also decides `CEO@EXAMPLE.NET`, and a rule on
        # an internationalised domain is written, and matched, as its A-label (xn--…).
        mail_args = _mail_args(args)
        return [
            Target(object=f"mail:{mail_args.sender.domain}/{key}", act="send")
            for key in mail_args.recipient_keys().values()
        ]

    def execute(self, ctx: ExecutionContext, args: BaseModel) -> ToolOutcome:
        # Clearer whole: this is the send pipeline in the order of the module docstring (window,
        # sign, verify, admit, deliver, record), and each step may end the attempt with its own
        # outcome. Split, every step would hand back "go on, or stop with this", and the order a
        # reviewer checks against the docstring would be spread over several functions.
        mail_args = _mail_args(args)
        sub = self.config.subdomain(mail_args.sender.domain)
        if sub is None:
            reason = f"{mail_args.sender.domain} is no longer a configured sending subdomain"
            return Failed(reason, retryable=False)
        settled = dict(self._gate.settled_recipients(ctx))
        pending = [r for r in mail_args.recipients() if r not in settled]
        message_id = message_id_for(ctx.action_id, sub.domain)
        artifact: dict[str, Any] = {
            "message_id": message_id,
            "mime_b64": None,
            "subdomain": sub.domain,
            "dkim_selector": sub.dkim.selector,
        }
        if not pending:
            return _outcome(mail_args, settled, artifact, tls=None)

        now = self._clock()
        opens = next_allowed(sub.send_window, now, mail_args.recipient_timezone)
        if opens is not None:
            assert sub.send_window is not None  # only a window can be closed
            zone = mail_args.recipient_timezone or sub.send_window.timezone
            return Deferred(opens, f"outside the send window of {sub.domain} (in {zone})")

        try:
            signed = self._signed_message(mail_args, sub, message_id, now)
        except (DkimKeyError, DkimSelfCheckError) as exc:
            return Failed(f"DKIM for {sub.domain}: {exc}", retryable=False, artifact=artifact)
        artifact["mime_b64"] = base64.b64encode(signed).decode("ascii")

        admission = self._gate.admit(ctx, mail_args, pending)
        if isinstance(admission, Deferred | Failed):
            return admission
        suppressed = (admission or Admitted()).suppressed
        envelope = [r for r in pending if r not in suppressed]
        envelope_from = sub.bounce_address or mail_args.sender.address
        results = {r: RecipientResult(None, suppressed[r], "suppressed") for r in pending if r in suppressed}
        tls = False
        if envelope:
            report = self._delivery.deliver(
                sub.relay,
                helo_name=sub.domain,
                envelope_from=envelope_from,
                recipients=envelope,
                message=signed,
            )
            results.update(report.recipients)
            tls = report.tls
        else:
            artifact["mime_b64"] = None
        attempt = SendAttempt(
            subdomain=sub.domain,
            dkim_selector=sub.dkim.selector,
            message_id=message_id,
            envelope_from=envelope_from,
            mime=signed if envelope else b"",
            results=results,
            tls=tls,
        )
        self._gate.record_results(ctx, mail_args, attempt)
        return _outcome(mail_args, {**settled, **results}, artifact, tls=tls)

    def _signed_message(self, args: EmailSendArgs, sub: SubdomainConfig, message_id: str, now: datetime) -> bytes:
        # Read per message (a small file read), parsed once per distinct key by
        # load_signing_key: a key file replaced in place signs the very next message.
        key = load_signing_key(sub.dkim, self._key_base_dir)
        headers = self._unsubscribe_headers(args, sub) if args.category == "bulk" else None
        mime = build_mime(args, message_id=message_id, date=now, extra_headers=headers)
        signed = sign_message(mime, key=key, selector=sub.dkim.selector, domain=sub.domain)
        verify_own_signature(signed, key=key, selector=sub.dkim.selector, domain=sub.domain)
        return signed

    def _unsubscribe_headers(self, args: EmailSendArgs, sub: SubdomainConfig) -> dict[str, str]:
        settings = self.config.unsubscribe
        # Bulk mail has exactly one recipient; the token names the mailbox, so unsubscribing
        # stops mail to every spelling of it.
        token = sign_unsubscribe_token(self._secret, recipient=args.to[0].key, subdomain=sub.domain)
        mailto = f"{settings.mailto_local_part}@{sub.domain}" if settings.mailto else None
        return list_unsubscribe_headers(token=token, base_url=settings.base_url, mailto_address=mailto)


def _refuse_address_like_names(raw: dict[str, Any]) -> None:
    """Refuse a From or Reply-To display name that looks like an address, in every form an agent
    can send it (quoted or not, `{name: …}`), before the address parser gives a vaguer reason."""
    field_names = {"from": "From", "reply_to": "Reply-To"}
    for field, header in field_names.items():
        name = display_part(raw.get(field))
        problem = None if name is None else display_name_problem(name)
        if problem is not None:
            raise ToolArgumentsError(
                [FieldProblem(field, f"the {header} display name {problem}")],
                hint=(
                    f'use a plain name for {field} (for example "Billing team"), without an '
                    "address or an at-sign; recipients see the sending address next to it"
                ),
            )


def _mail_args(args: BaseModel) -> EmailSendArgs:
    if not isinstance(args, EmailSendArgs):
        raise TypeError(f"email.send expects EmailSendArgs, got {type(args).__name__}")
    return args


def _outcome(
    args: EmailSendArgs,
    results: Mapping[str, RecipientResult],
    artifact: dict[str, Any],
    *,
    tls: bool | None,
) -> ToolOutcome:
    """Succeeded once every recipient is settled and one got it; retryable while any 4xx is left."""
    order = [r for r in args.recipients() if r in results]
    response: dict[str, Any] = {
        "recipients": {r: results[r].as_dict() for r in order},
        "tls": tls,
    }
    delivered = [r for r in order if results[r].delivered]
    retryable = [r for r in order if results[r].retryable]
    if retryable:
        reason = (
            f"{len(retryable)} of {len(order)} recipient(s) not reached yet, retry sends to "
            f"them only: {_describe(results, retryable)}"
        )
        return Failed(reason, retryable=True, artifact=artifact, response=response)
    if delivered:
        refused = len(order) - len(delivered)
        summary = f"delivered to {len(delivered)} of {len(order)} recipient(s)"
        return Succeeded(artifact, response, summary + (f", {refused} refused" if refused else ""))
    reason = f"every recipient refused: {_describe(results, order)}"
    return Failed(reason, retryable=False, artifact=artifact, response=response)
