"""One canonical spelling for every human identity that authority depends on.

Who a call is made for (`on_behalf_of`) and who decides on it (`--as` on the CLI, `as` in the
admin API, the Slack user who clicked) are compared to keep the person acted for from approving
their own call and to count a quorum of distinct people. Compared as written, one person has
endless spellings: `Lead <lead@example.com>`, `mailto:lead@example.com`, `LEAD@example.com`,
`ｌｅａｄ@example.com`, the address with an invisible character appended. So each identity is
parsed into one canonical principal, and only canonical forms are ever compared:

- an e-mail address, bare or as `user:<address>`, becomes `user:<address>`: Unicode NFKC first
  (fullwidth and other compatibility forms become the ASCII they stand for), then parsed by
  `email-validator` (syntax only, never DNS), the local part ASCII, the domain in its IDNA
  (`xn--`) form so that a look-alike domain looks different, and the whole address case-folded.
  RFC 5321 allows a mailbox's local part to be case-sensitive, but identities here are compared
  as people, not delivered to: nearly every provider treats `Lead@` and `lead@` as one mailbox,
  and treating them as one person can only make the self-approval rule refuse more. An identity
  is never a credential (what it may do comes from policy), so folding grants nothing new.
- `user:<name>` for people without an address in the policy: 1-64 ASCII letters, digits, `.`,
  `_` or `-`, case-folded.
- `slack:<user id>`: a Slack user id (`U0123ABC`, `W…`), upper case as Slack writes them.

Anything else is refused with a message saying what to send instead: display names and angle
brackets, `mailto:`, other prefixes (`agent:`, `role:`), whitespace inside, control and format
characters (zero-width, bidi controls), and addresses email-validator refuses.

`principals_in` is the lenient reading for values stored before this parser existed: it finds
every person a stored text could name, so that an old spelling still counts as that person.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass
from email.utils import getaddresses

from email_validator import validate_email

# Longer input is refused before NFKC (which can expand a character eighteenfold).
MAX_INPUT_CHARS = 320
# The canonical form is recorded as the actor of audit events, whose column holds 200 characters;
# no real address comes near it.
MAX_CANONICAL_CHARS = 200

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,31}):(.*)$", re.DOTALL)
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SLACK_ID = re.compile(r"^[UW][A-Z0-9]{2,31}$")
# Unicode categories no identity may contain: they are invisible, or not characters at all.
_FORBIDDEN = {
    "Cc": "control",
    "Cf": "invisible format",
    "Cs": "surrogate",
    "Co": "private-use",
    "Cn": "unassigned",
    "Zl": "line separator",
    "Zp": "paragraph separator",
}
_SEND_INSTEAD = "send the person as a bare e-mail address like ada@example.com, or as user:<name> or slack:<user id>"


class PrincipalKind(enum.StrEnum):
    EMAIL = "email"
    NAME = "name"
    SLACK = "slack"


@dataclass(frozen=True, slots=True)
class Principal:
    """A person as the outbox compares them. `value` is the canonical address, name or id."""

    kind: PrincipalKind
    value: str

    @property
    def canonical(self) -> str:
        """`user:ada@example.com`, `user:ada`, `slack:U0123ABC`: the only form ever compared."""
        return f"{'slack' if self.kind is PrincipalKind.SLACK else 'user'}:{self.value}"

    def __str__(self) -> str:
        return self.canonical


class InvalidIdentity(ValueError):
    """An identity that does not name one person unambiguously; the message says what to send."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _shown(text: str) -> str:
    # repr() escapes what cannot be printed (control, format and bidi characters), so the
    # message shows exactly what was received; long input is cut.
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _refuse_hidden_characters(text: str, shown: str) -> None:
    for char in text:
        category = unicodedata.category(char)
        if category in _FORBIDDEN:
            raise InvalidIdentity(
                f"{shown} contains the {_FORBIDDEN[category]} character U+{ord(char):04X}: "
                "an identity is written with visible characters only; send it without that character"
            )


def parse_principal(text: str) -> Principal:
    """The one canonical principal `text` names, or InvalidIdentity saying what to send instead."""
    if not isinstance(text, str):
        raise InvalidIdentity(f"an identity is a string; {_SEND_INSTEAD}")
    shown = _shown(text)
    if len(text) > MAX_INPUT_CHARS:
        raise InvalidIdentity(f"{shown} is longer than {MAX_INPUT_CHARS} characters; {_SEND_INSTEAD}")
    _refuse_hidden_characters(text, shown)
    normal = unicodedata.normalize("NFKC", text).strip()
    _refuse_hidden_characters(normal, shown)
    if not normal:
        raise InvalidIdentity(f"the identity is empty; {_SEND_INSTEAD}")
    if any(char in normal for char in '<>"'):
        addresses = [address.removeprefix("mailto:") for _name, address in getaddresses([normal]) if "@" in address]
        instead = f"send the bare address only, like {addresses[0]}" if addresses else _SEND_INSTEAD
        raise InvalidIdentity(
            f"{shown} has a display name, quotes or angle brackets (they are not part of an identity): {instead}"
        )
    if any(char.isspace() for char in normal):
        raise InvalidIdentity(f"{shown} contains whitespace; {_SEND_INSTEAD}")
    scheme = _SCHEME.match(normal)
    if scheme is None:
        if "@" not in normal:
            raise InvalidIdentity(
                f"{shown} is neither an e-mail address nor a prefixed identity: write user:{normal.casefold()} "
                "for a person named in the policy, or send their e-mail address"
            )
        return _email(normal, shown)
    prefix, rest = scheme.group(1).casefold(), scheme.group(2)
    if prefix == "mailto":
        raise InvalidIdentity(f"{shown} is a mailto: URI: send the bare address {rest} (or user:{rest}) instead")
    if prefix in ("agent", "role"):
        raise InvalidIdentity(
            f"{shown} is {'an agent' if prefix == 'agent' else 'a role'}, not a person; {_SEND_INSTEAD}"
        )
    if prefix not in ("user", "slack"):
        raise InvalidIdentity(f"{shown} has an unknown prefix {prefix!r}; {_SEND_INSTEAD}")
    if not rest or ":" in rest:
        raise InvalidIdentity(f"{shown} is not one identity: after {prefix}: comes one address, name or id only")
    if prefix == "slack":
        return _slack(rest, shown)
    if "@" in rest:
        return _email(rest, shown)
    name = rest.casefold()
    if not _NAME.match(name):
        raise InvalidIdentity(
            f"{shown}: a user name is 1-64 ASCII letters, digits, '.', '_' or '-', starting with a letter "
            "or digit; for a person with an e-mail address send the address"
        )
    return Principal(PrincipalKind.NAME, name)


def _email(text: str, shown: str) -> Principal:
    try:
        validated = validate_email(
            text,
            check_deliverability=False,
            allow_smtputf8=False,
            allow_display_name=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_empty_local=False,
        )
    except ValueError as exc:  # EmailNotValidError, and the IDNA codec's UnicodeError
        raise InvalidIdentity(f"{shown} is not a valid e-mail address ({exc}); {_SEND_INSTEAD}") from exc
    address = validated.ascii_email
    if address is None:  # pragma: no cover - allow_smtputf8=False always yields an ASCII form
        raise InvalidIdentity(f"{shown} has no ASCII form; {_SEND_INSTEAD}")
    principal = Principal(PrincipalKind.EMAIL, address.casefold())
    if len(principal.canonical) > MAX_CANONICAL_CHARS:
        raise InvalidIdentity(f"{shown} is longer than any address accepted here ({MAX_CANONICAL_CHARS} characters)")
    return principal


def _slack(text: str, shown: str) -> Principal:
    user_id = text.upper() if text.isascii() else text
    if not _SLACK_ID.match(user_id):
        raise InvalidIdentity(
            f"{shown}: a Slack identity is slack:<user id>, the id Slack shows in a member's profile "
            "(U or W followed by letters and digits, like slack:U0123ABC), not a display name or @handle"
        )
    return Principal(PrincipalKind.SLACK, user_id)


def canonical_identity(text: str) -> str:
    """`parse_principal(text).canonical`."""
    return parse_principal(text).canonical


def canonical_or_none(text: str) -> str | None:
    """The canonical form, or None when `text` is not an identity (for names that may be roles)."""
    try:
        return parse_principal(text).canonical
    except InvalidIdentity:
        return None


_SEPARATORS = re.compile(r"[\s<>,;\"'()\[\]]+")


def principals_in(text: str) -> frozenset[Principal]:
    """Every person a stored identity could name, read leniently, failing safe.

    For values recorded before identities were parsed (`Lead <lead@example.com>`, a zero-width
    character appended, `mailto:`): every address or prefixed identity found in the text counts
    as the person. Text that names nobody yields nothing, which no approver equals.
    """
    try:
        return frozenset({parse_principal(text)})
    except InvalidIdentity:
        pass
    cleaned = "".join(
        char
        for char in unicodedata.normalize("NFKC", text[: MAX_INPUT_CHARS * 4])
        if unicodedata.category(char) not in _FORBIDDEN
    )
    candidates = {cleaned.strip(), *(address for _name, address in getaddresses([cleaned]))}
    candidates.update(_SEPARATORS.split(cleaned))
    found: set[Principal] = set()
    for candidate in candidates:
        for form in _unwrapped(candidate):
            try:
                found.add(parse_principal(form))
            except InvalidIdentity:
                continue
    return frozenset(found)


def _unwrapped(candidate: str) -> list[str]:
    """`candidate`, and what remains after each leading `mailto:`/`user:` is removed."""
    forms = [candidate]
    current = candidate.strip()
    while True:
        scheme = _SCHEME.match(current)
        if scheme is None or scheme.group(1).casefold() not in ("mailto", "user"):
            return forms
        current = scheme.group(2)
        forms.append(current)
