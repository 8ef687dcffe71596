"""The arguments of `email.send`, and the MIME message built from them.

Agents never write headers. They give addresses, a subject and a body; every header the message
carries is set here, from validated values, by the stdlib `email` package (which folds and RFC 2047
encodes them). Header injection is ruled out twice over: a CR or LF (or any control character) in
a value is refused, and no value an agent sends can become a header field of its own.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime
from typing import Annotated, Any, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from outbox.mail.addresses import display_name_problem, recipient_key, refused_character
from outbox.mail.config import validate_timezone

# RFC 5322 §2.1.1: a line is at most 998 characters; a subject longer than that is not a subject.
MAX_SUBJECT_CHARS = 998
MAX_DISPLAY_NAME_CHARS = 200

# Everything a header value must not contain: C0 controls (CR, LF, NUL…), DEL, C1 controls (NEL
# among them) and the Unicode line and paragraph separators, which some readers break lines on.
_FORBIDDEN_IN_HEADER = re.compile("[\x00-\x1f\x7f\x80-\x9f\u2028\u2029]")
# An RFC 2047 encoded-word. We encode headers ourselves; a value that arrives pre-encoded would be
# decoded by the reader into text nobody validated (an encoded CRLF, say).
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
# A dot-atom (RFC 5322 §3.2.3) an action id can be used as, unchanged, in a Message-ID.
_SAFE_ID_LEFT = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


class _OutboxPolicy(EmailPolicy):
    """The SMTP policy, except that List-Unsubscribe is never RFC 2047 encoded.

    The stdlib encodes any header word longer than a line, and a signed unsubscribe URI is one;
    an encoded-word there would not be a URI any more (RFC 2369 §2, RFC 8058 §3.1). The value is
    ASCII we built ourselves, so it is folded only between its URIs.
    """

    def _raw_list_unsubscribe(self, name: str, value: str) -> str | None:
        if name.lower() != "list-unsubscribe":
            return None
        return f"{name}: " + str(value).replace(", ", "," + self.linesep + " ") + self.linesep

    def fold(self, name: str, value: str) -> str:
        raw = self._raw_list_unsubscribe(name, value)
        return super().fold(name, value) if raw is None else raw

    def fold_binary(self, name: str, value: str) -> bytes:
        raw = self._raw_list_unsubscribe(name, value)
        return super().fold_binary(name, value) if raw is None else raw.encode("ascii")


# Sent messages are 7-bit clean: non-ASCII headers become RFC 2047 encoded-words and non-ASCII
# bodies quoted-printable or base64, so no relay needs 8BITMIME or SMTPUTF8. Lines end in CRLF.
MIME_POLICY = _OutboxPolicy(linesep="\r\n", cte_type="7bit")


def check_header_text(value: str) -> str:
    """Refuse what cannot be put into a header safely; return the value unchanged otherwise."""
    if _FORBIDDEN_IN_HEADER.search(value):
        raise ValueError("contains a line break or another control character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode text (lone surrogate)") from None
    if _ENCODED_WORD.search(value):
        raise ValueError(
            "contains an RFC 2047 encoded-word (=?charset?…?=); send plain Unicode text, "
            "the outbox encodes headers itself"
        )
    return value


class Mailbox(BaseModel):
    """A normalised address (ASCII, lowercase domain) with an optional display name.

    `address` keeps the local part as written: it is what the envelope and headers carry. `key`
    is the mailbox it names (`outbox.mail.addresses.recipient_key`), which is what is compared
    and counted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str
    name: str | None = None

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    @property
    def key(self) -> str:
        return recipient_key(self.address)

    def header_address(self) -> Address:
        return Address(display_name=self.name or "", addr_spec=self.address)


def _validated_address(text: str, *, allow_display_name: bool) -> tuple[str, str | None]:
    check_header_text(text)
    bad = refused_character(text)
    if bad is not None:
        raise ValueError(f"contains {bad}; an address never needs it and it can make one address look like another")
    try:
        valid = validate_email(
            text,
            allow_display_name=allow_display_name,
            # Internationalised local parts need SMTPUTF8 end to end; we do not rely on it.
            allow_smtputf8=False,
            check_deliverability=False,
        )
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    address = valid.ascii_email
    if address is None:  # only possible with SMTPUTF8 addresses, refused above
        raise ValueError("needs SMTPUTF8, which agent mail does not use")
    return address, valid.display_name


def normalise_address(text: str) -> str:
    """A bare address, validated and normalised as `email.send` does it (for feedback events)."""
    return _validated_address(text, allow_display_name=False)[0]


def _display_name(name: object) -> str | None:
    if name is None or name == "":
        return None
    if not isinstance(name, str):
        raise ValueError("name must be a string")
    if len(name) > MAX_DISPLAY_NAME_CHARS:
        raise ValueError(f"display name longer than {MAX_DISPLAY_NAME_CHARS} characters")
    return check_header_text(name)


def _parse_mailbox(value: object) -> Mailbox:
    """Accept `"a@b"`, `"Name <a@b>"` or `{"address": "a@b", "name": "Name"}`."""
    if isinstance(value, Mailbox):
        return value
    if isinstance(value, str):
        address, name = _validated_address(value, allow_display_name=True)
        return Mailbox(address=address, name=_display_name(name))
    if isinstance(value, dict):
        unknown = set(value) - {"address", "name"}
        if unknown:
            raise ValueError(f"unknown key(s) {sorted(unknown)}; use address and name")
        raw = value.get("address")
        if not isinstance(raw, str):
            raise ValueError("address must be a string")
        address, _ = _validated_address(raw, allow_display_name=False)
        return Mailbox(address=address, name=_display_name(value.get("name")))
    raise ValueError("an address is a string or an object {address, name}")


_MAILBOX_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "description": 'An address, optionally with a name: "Ann <a@b.com>"'},
        {
            "type": "object",
            "properties": {"address": {"type": "string"}, "name": {"type": "string"}},
            "required": ["address"],
            "additionalProperties": False,
        },
    ]
}
MailboxField = Annotated[Mailbox, BeforeValidator(_parse_mailbox), WithJsonSchema(_MAILBOX_SCHEMA)]


def _field_error(loc: tuple[str | int, ...], message: str, value: object) -> ValidationError:
    """A ValidationError located on one field, for rules that look at several fields at once."""
    detail = InitErrorDetails(type=PydanticCustomError("email_send", message), loc=loc, input=value)
    return ValidationError.from_exception_data("EmailSendArgs", [detail])


class EmailSendArgs(BaseModel):
    """Arguments of `email.send`. Unknown keys are refused: agents cannot add headers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sender: MailboxField = Field(
        alias="from",
        description="The sender, on one of the configured agent sending subdomains.",
    )
    to: list[MailboxField] = Field(min_length=1)
    cc: list[MailboxField] = Field(default_factory=list)
    bcc: list[MailboxField] = Field(default_factory=list)
    reply_to: MailboxField | None = None
    subject: str = Field(min_length=1, max_length=MAX_SUBJECT_CHARS)
    text: str | None = Field(default=None, description="Plain-text body (text and/or html).")
    html: str | None = Field(default=None, description="HTML body (text and/or html).")
    category: Literal["transactional", "bulk"] = Field(
        description="bulk mail goes to one recipient and carries one-click unsubscribe."
    )
    recipient_timezone: str | None = Field(default=None, description="IANA zone of the recipient, for send windows.")

    @field_validator("subject")
    @classmethod
    def _subject_is_header_safe(cls, value: str) -> str:
        return check_header_text(value)

    @field_validator("text", "html")
    @classmethod
    def _body_has_no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("contains a NUL character")
        return value

    @field_validator("sender", "reply_to")
    @classmethod
    def _name_is_not_an_address(cls, value: Mailbox | None) -> Mailbox | None:
        # A From or Reply-To display name is what most clients show instead of the address.
        problem = None if value is None or value.name is None else display_name_problem(value.name)
        if problem is not None:
            raise ValueError(f"display name {problem}")
        return value

    @field_validator("recipient_timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return None if value is None else validate_timezone(value)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> EmailSendArgs:
        if not self.text and not self.html:
            raise _field_error(("text",), "give a body: text and/or html", self.text)
        # One mailbox, however it is spelled (Erin@ and erin@), is one recipient: a second
        # spelling is refused rather than mailed twice or counted as two against its budget.
        seen: dict[str, str] = {}
        for field, index, mailbox in self._recipient_entries():
            if mailbox.key in seen:
                raise _field_error(
                    (field, index),
                    f"{mailbox.address} is the same mailbox as {seen[mailbox.key]}: name each recipient once",
                    mailbox.address,
                )
            seen[mailbox.key] = f"{mailbox.address} in {field}[{index}]"
        if self.category == "bulk" and (len(self.to) != 1 or self.cc or self.bcc):
            # Each bulk message carries its recipient's own unsubscribe token (RFC 8058), so a
            # bulk message has exactly one recipient.
            field = "to" if len(self.to) != 1 else ("cc" if self.cc else "bcc")
            raise _field_error(
                (field,),
                "bulk mail has exactly one recipient, in to; send one action per recipient",
                None,
            )
        return self

    def _recipient_entries(self) -> Iterator[tuple[str, int, Mailbox]]:
        for field, boxes in (("to", self.to), ("cc", self.cc), ("bcc", self.bcc)):
            for index, mailbox in enumerate(boxes):
                yield field, index, mailbox

    def recipients(self) -> list[str]:
        """Every envelope recipient (to, cc and bcc), in order, as written."""
        return [mailbox.address for _, _, mailbox in self._recipient_entries()]

    def recipient_keys(self) -> dict[str, str]:
        """Each envelope recipient as written → the mailbox it is (its recipient key)."""
        return {mailbox.address: mailbox.key for _, _, mailbox in self._recipient_entries()}

    def body_bytes(self) -> int:
        return len((self.text or "").encode()) + len((self.html or "").encode())


def message_id_for(action_id: str, subdomain: str) -> str:
    """One Message-ID per action, on the sending subdomain (RFC 5322 §3.6.4).

    Derived from the action so that a retry to the recipients still outstanding carries the same
    Message-ID: it is the same message, and receivers and our own records can tell.
    """
    if len(action_id) <= 128 and _SAFE_ID_LEFT.fullmatch(action_id):
        return f"<{action_id}@{subdomain}>"
    return f"<{hashlib.sha256(action_id.encode()).hexdigest()[:32]}@{subdomain}>"


def build_mime(
    args: EmailSendArgs,
    *,
    message_id: str,
    date: datetime,
    extra_headers: Mapping[str, str] | None = None,
) -> bytes:
    """The unsigned message as CRLF, 7-bit bytes. Bcc recipients appear in no header."""
    msg = EmailMessage(policy=MIME_POLICY)
    msg["From"] = args.sender.header_address()
    msg["To"] = [m.header_address() for m in args.to]
    if args.cc:
        msg["Cc"] = [m.header_address() for m in args.cc]
    if args.reply_to is not None:
        msg["Reply-To"] = args.reply_to.header_address()
    msg["Subject"] = args.subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    for name, value in (extra_headers or {}).items():
        msg[name] = value
    if args.text:
        msg.set_content(args.text)
        if args.html:
            msg.add_alternative(args.html, subtype="html")
            # add_alternative repeats MIME-Version inside the part; it belongs at the top only.
            for part in msg.iter_parts():
                del part["MIME-Version"]
    else:
        msg.set_content(args.html or "", subtype="html")
    return msg.as_bytes()
