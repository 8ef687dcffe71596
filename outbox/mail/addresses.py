"""Which mailbox an address is, and whether a display name pretends to be one.

One key per mailbox. `Erin@example.net`, `ERIN@EXAMPLE.NET` and `erin@exämple.net` versus
`erin@xn--exmple-cua.net` are, to every mailbox provider that matters, one person each; counted as
written they were several, so a per-recipient cap of three let six messages reach one inbox, and a
suppression or a policy deny on one spelling did not stop another. `recipient_key` is the one
answer to "which mailbox is this?"; budgets, suppression, one-click unsubscribe, bounce and
complaint ingestion, duplicate recipients within a message and the policy object
(`mail:<subdomain>/<recipient>`) all compare or count `recipient_key(address)`, never the text.

The key is built as follows:

- Refuse control, format (zero-width, bidi), surrogate, private-use and unassigned characters
  and the Unicode line/paragraph separators: they make one address look like another.
- Unicode NFKC (fullwidth `ｅ` is `e`, `＠` is `@`, a decomposed `é` is the composed one).
- Parse and validate with email-validator (no display name, no quoted local part, no IP literal).
- Domain: IDNA 2008 with the UTS #46 mapping, as an A-label (`xn--…`), in lower case: DNS is case
  insensitive and both forms of an internationalised name resolve to the same host.
- Local part: Unicode case folded (then NFKC again). RFC 5321 §2.4 lets a host treat local parts
  case sensitively, but nearly every provider does not, and for budgets and suppression counting
  two spellings as one mailbox is the safe mistake: at worst a person gets fewer messages.

The address *as written* (domain normalised to its lower-case A-label by `outbox.mail.sending.message`,
local part untouched) is still what goes into the SMTP envelope and the To:/Cc: headers: a
receiving host that does distinguish case gets exactly what the agent asked for.

`display_name_problem` answers the other half of "who is this mail from": a From (or Reply-To)
display name that contains an address (`"ceo@example.com" <agent@agents.mail.example.com>`) is
what most mail clients show instead of the address, so it is phishing, and it is refused.
"""

from __future__ import annotations

import re
import unicodedata
from email.errors import HeaderParseError
from email.header import decode_header, make_header

from email_validator import EmailNotValidError, validate_email

# Unicode general categories no address or display name needs: control (Cc), format (Cf: zero
# width space and joiners, bidi overrides, soft hyphen…), surrogate (Cs), private use (Co),
# unassigned (Cn), line and paragraph separators (Zl, Zp).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Format characters a display name may keep: scripts such as Persian and Devanagari and emoji
# sequences need the zero-width (non-)joiner. They are removed before looking for an address.
_NAME_FORMAT_ALLOWED = frozenset({"\u200c", "\u200d"})

# The at-sign and its Unicode confusables (NFKC maps both to "@", but they are named here so
# that the rule does not depend on a normalisation step being kept).
AT_SIGNS = frozenset({"@", "\uff20", "\ufe6b"})
# "ceo [at] example.com", "ceo(at)example.com", "ceo {at} example.com", "ceo <at> example.com".
_BRACKETED_AT = re.compile(r"[\[({<]\s*at\s*[\])}>]", re.IGNORECASE)
# "ceo at example.com", "ceo at example dot com": a word, "at", and labels separated by dots (or
# a spelled-out dot) ending in one that starts with a letter, as a top-level domain does.
_DOT = r"(?:\s*\.\s*|\s+dot\s+|\s*[\[({<]\s*dot\s*[\])}>]\s*)"
_SPELLED_AT = re.compile(rf"[\w.+-]\s+at\s+[\w-]+(?:{_DOT}[\w-]+)*{_DOT}[^\W\d_][\w-]*", re.IGNORECASE)
# An RFC 2047 encoded-word, decoded before looking (outbox.mail.sending.message refuses them anyway).
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


class RecipientAddressError(ValueError):
    """Text that is not one mailbox's address; the message says why."""


def refused_character(text: str) -> str | None:
    """Describe the first character an address must not contain (`U+200B ZERO WIDTH SPACE`)."""
    for char in text:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            return _describe(char)
    return None


def _describe(char: str) -> str:
    return f"U+{ord(char):04X} {unicodedata.name(char, 'unnamed character')}"


def _fold(text: str) -> str:
    """NFKC case folding: NFKC, full Unicode case folding, NFKC again (folding can un-compose)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def recipient_key(address: str) -> str:
    """The mailbox `address` is: `local@domain`, local part case folded, domain an A-label.

    Raises `RecipientAddressError` for text that is not one address (a display name, a list,
    a format character, no domain…). Idempotent: `recipient_key(recipient_key(a)) == recipient_key(a)`.
    """
    bad = refused_character(address)
    if bad is not None:
        raise RecipientAddressError(f"contains {bad}, which can make one address look like another")
    try:
        valid = validate_email(
            unicodedata.normalize("NFKC", address),
            # Keys are computed for addresses from bounces and providers too, which may carry
            # internationalised local parts; `email.send` itself refuses those (no SMTPUTF8).
            allow_smtputf8=True,
            allow_display_name=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            check_deliverability=False,
        )
    except EmailNotValidError as exc:
        raise RecipientAddressError(str(exc)) from None
    return f"{_fold(valid.local_part)}@{valid.ascii_domain.lower()}"


def recipient_domain(key: str) -> str:
    """The domain of a recipient key (an A-label in lower case)."""
    return key.rpartition("@")[2]


def display_part(value: object) -> str | None:
    """The display name of a mailbox as an agent sends it: the `name` of `{address, name}`, or
    what precedes the last `<` of `"Name <a@b>"`; None when there is none."""
    if isinstance(value, dict):
        name = value.get("name")
        return name if isinstance(name, str) and name else None
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(">") and "<" in text:
            name = text[: text.rindex("<")].strip()
            return name or None
    return None


def _decoded(name: str) -> str:
    """The name with RFC 2047 encoded-words decoded (what a mail client would show)."""
    if not _ENCODED_WORD.search(name):
        return name
    try:
        return str(make_header(decode_header(name)))
    except (HeaderParseError, LookupError, UnicodeDecodeError, ValueError):
        return name


def display_name_problem(name: str) -> str | None:
    """Why `name` cannot be a sender's display name, or None if it can.

    Refused: an at-sign or one of its confusables (`@`, `＠`, `﹫`), an at spelled out between an
    address-like local part and domain (`ceo [at] example.com`, `ceo at example.com`), and
    control or format characters (bidi overrides, zero-width spaces) that could hide either.
    Encoded-words are decoded and NFKC applied first, so no encoding hides an address.
    """
    shown = _decoded(name)
    for char in shown:
        if unicodedata.category(char) in _REFUSED_CATEGORIES and char not in _NAME_FORMAT_ALLOWED:
            return f"contains {_describe(char)}, which can disguise what the name says"
    visible = unicodedata.normalize("NFKC", "".join(c for c in shown if c not in _NAME_FORMAT_ALLOWED))
    found = next((c for c in shown if c in AT_SIGNS), None) or ("@" if "@" in visible else None)
    if found is not None:
        what = "an at-sign" if found == "@" else f"{_describe(found)}, which looks like an at-sign"
        return f"contains {what}: a display name that looks like an address is shown instead of the real one"
    if _BRACKETED_AT.search(visible) or _SPELLED_AT.search(visible):
        return (
            "spells out an address (… at domain): a display name that looks like an address is "
            "shown instead of the real one"
        )
    return None
