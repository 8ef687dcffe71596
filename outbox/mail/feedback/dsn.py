"""Bounce messages (RFC 3464 delivery status notifications) as hard and soft failures.

flufl.bounce decides which original recipients failed and whether permanently (a hard bounce:
suppress the address) or temporarily (a soft bounce: count it, do not suppress). Its detectors
also understand the non-standard bounces many MTAs still send. Where the message has a standard
`message/delivery-status` part we add that part's Status and Diagnostic-Code per recipient, and the
Message-ID of the returned message, which links the bounce to the action that sent it.
"""

from __future__ import annotations

import email
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from enum import StrEnum

from flufl.bounce import all_failures

from outbox.mail.addresses import RecipientAddressError, recipient_key


class BounceKind(StrEnum):
    HARD = "hard"
    SOFT = "soft"


@dataclass(frozen=True, slots=True)
class BouncedRecipient:
    recipient: str
    kind: BounceKind
    # RFC 3464 §2.3.4 Status (an RFC 3463 enhanced code such as 5.1.1) and §2.3.6 Diagnostic-Code.
    status: str | None = None
    diagnostic: str | None = None


@dataclass(frozen=True, slots=True)
class DsnReport:
    recipients: tuple[BouncedRecipient, ...]
    original_message_id: str | None
    reporting_mta: str | None

    @property
    def is_bounce(self) -> bool:
        return bool(self.recipients)


def _address(value: bytes | str) -> str:
    """The recipient key of a reported address (`ERIN@Example.NET` → `erin@example.net`), so that
    the bounce names the mailbox we sent to however the reporting MTA spelled it. Text that is not
    an address is kept (trimmed, lower case): it is reported, but matches no recipient of ours."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    text = text.strip().removeprefix("<").removesuffix(">")
    try:
        return recipient_key(text)
    except RecipientAddressError:
        return text.lower()


def _unfold(value: str) -> str:
    return " ".join(value.split())


def _typed_value(value: str) -> str:
    """`rfc822; a@b` → `a@b` (RFC 3464 §2.1.2 address-type; value)."""
    return value.partition(";")[2].strip() if ";" in value else value.strip()


def _subparts(part: Message) -> list[Message]:
    """The parsed sub-messages of a message/* part (header blocks of a delivery-status part)."""
    payload = part.get_payload()
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def _delivery_status(msg: Message) -> tuple[str | None, dict[str, tuple[str | None, str | None]]]:
    """Reporting-MTA, and per recipient (Status, Diagnostic-Code), from message/delivery-status."""
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = _subparts(part)
        if not blocks:
            continue
        mta = blocks[0].get("Reporting-MTA")
        fields: dict[str, tuple[str | None, str | None]] = {}
        for block in blocks[1:]:
            status, diagnostic = block.get("Status"), block.get("Diagnostic-Code")
            entry = (
                None if status is None else _unfold(str(status)),
                None if diagnostic is None else _unfold(_typed_value(str(diagnostic))),
            )
            for header in ("Final-Recipient", "Original-Recipient"):
                value = block.get(header)
                if value is not None:
                    fields.setdefault(_address(_typed_value(str(value))), entry)
        return (None if mta is None else _typed_value(str(mta))), fields
    return None, {}


def _original_message_id(msg: Message) -> str | None:
    """The Message-ID of the returned message (message/rfc822 or text/rfc822-headers part)."""
    for part in msg.walk():
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            returned = _subparts(part)
            if returned:
                value = returned[0].get("Message-ID")
                return None if value is None else str(value).strip()
        elif content_type == "text/rfc822-headers":
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                headers = HeaderParser().parsestr(text.decode("utf-8", "replace"))
                value = headers.get("Message-ID")
                return None if value is None else str(value).strip()
    return None


def parse_dsn(raw: bytes) -> DsnReport:
    """Parse one bounce message. A message that reports no failure gives no recipients."""
    msg = email.message_from_bytes(raw)
    temporary, permanent = all_failures(msg)
    reporting_mta, fields = _delivery_status(msg)
    recipients: list[BouncedRecipient] = []
    for kind, found in ((BounceKind.HARD, permanent), (BounceKind.SOFT, temporary - permanent)):
        for address in sorted(_address(a) for a in found):
            status, diagnostic = fields.get(address, (None, None))
            recipients.append(BouncedRecipient(address, kind, status, diagnostic))
    return DsnReport(tuple(recipients), _original_message_id(msg), reporting_mta)
