"""One key per mailbox (`recipient_key`), and From display names that cannot pose as an address.

The key is what budgets, suppression, unsubscribe, bounces, duplicate detection and policy
compare: every spelling of one mailbox gives the same key, anything that could make one address
look like another is refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from outbox.mail.addresses import (
    RecipientAddressError,
    display_name_problem,
    display_part,
    recipient_domain,
    recipient_key,
)
from outbox.mail.budgets.ledger import recipient_cap_key, recipient_domain_key, send_caps
from outbox.mail.config import parse_mail_config
from outbox.mail.feedback.dsn import parse_dsn
from outbox.mail.sending.message import EmailSendArgs
from outbox.mail.sending.unsubscribe import (
    InvalidUnsubscribeTokenError,
    _b64,
    _mac,
    sign_unsubscribe_token,
    verify_unsubscribe_token,
)
from outbox.sqltypes import utcnow
from tests.mail.conftest import SECRET, SUBDOMAIN, config_data

SENDER = "Reports <reports@agents.mail.example.com>"

# --- recipient_key: every spelling of one mailbox is one key ----------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "erin@example.net",
        "Erin@example.net",
        "ERIN@example.net",
        "erin@EXAMPLE.NET",
        "eRiN@ExAmPlE.nEt",
        "ｅｒｉｎ@example.net",  # fullwidth local part (NFKC)
        "erin@ｅｘａｍｐｌｅ.ｎｅｔ",  # fullwidth domain (NFKC / UTS #46)
        "erin＠example.net",  # fullwidth at-sign
        "ＥＲＩＮ＠ＥＸＡＭＰＬＥ．ＮＥＴ",  # all of it fullwidth, the dot too
    ],
)
def test_case_and_width_variants_of_one_address_are_one_key(spelling: str) -> None:
    assert recipient_key(spelling) == "erin@example.net"


@pytest.mark.parametrize(
    "spelling",
    [
        "erin@exämple.net",
        "erin@EXÄMPLE.NET",
        "Erin@ExÄmple.Net",
        "erin@exa\u0308mple.net",  # decomposed ä (a + combining diaeresis)
        "erin@xn--exmple-cua.net",
        "ERIN@XN--EXMPLE-CUA.NET",
    ],
)
def test_an_internationalised_domain_is_keyed_as_its_lower_case_a_label(spelling: str) -> None:
    assert recipient_key(spelling) == "erin@xn--exmple-cua.net"
    assert recipient_domain(recipient_key(spelling)) == "xn--exmple-cua.net"


@pytest.mark.parametrize(
    ("spelling", "key"),
    [
        ("Ä@example.net", "ä@example.net"),
        ("A\u0308@example.net", "ä@example.net"),  # decomposed, then composed by NFKC
        ("STRASSE@example.net", "strasse@example.net"),
        ("Straße@example.net", "strasse@example.net"),  # full case folding: ß is ss
        ("ΣΊΣΥΦΟΣ@example.net", "σίσυφοσ@example.net"),  # final sigma folds like any sigma
    ],
)
def test_internationalised_local_parts_are_nfkc_case_folded(spelling: str, key: str) -> None:
    assert recipient_key(spelling) == key


@pytest.mark.parametrize(
    "address", ["Erin@Example.NET", "ＥＲＩＮ＠ＥＸＡＭＰＬＥ．ＮＥＴ", "Straße@EXÄMPLE.net", "Ä@bücher.de"]
)
def test_a_key_is_its_own_key(address: str) -> None:
    key = recipient_key(address)
    assert recipient_key(key) == key


def test_different_mailboxes_keep_different_keys() -> None:
    keys = {
        recipient_key(a)
        for a in [
            "erin@example.net",
            "erin@example.org",
            "erin+news@example.net",
            "e.rin@example.net",
            "erin@exämple.net",
        ]
    }
    assert len(keys) == 5


@pytest.mark.parametrize(
    ("address", "named"),
    [
        ("e\u200brin@example.net", "U+200B ZERO WIDTH SPACE"),
        ("erin\u200d@example.net", "U+200D ZERO WIDTH JOINER"),
        ("erin@exa\u200cmple.net", "U+200C ZERO WIDTH NON-JOINER"),
        ("erin@example.net\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("\u2066erin@example.net", "U+2066 LEFT-TO-RIGHT ISOLATE"),
        ("er\u00adin@example.net", "U+00AD SOFT HYPHEN"),
        ("\ufeffErin@example.net", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
        ("erin@example.net\x00", "U+0000"),
        ("erin@example.net\r\nBcc: x@example.org", "U+000D"),
        ("erin\u2028@example.net", "U+2028 LINE SEPARATOR"),
        ("erin\ue000@example.net", "U+E000"),  # private use
        ("erin\U000e0041@example.net", "U+E0041 TAG LATIN CAPITAL LETTER A"),
    ],
)
def test_format_and_control_characters_are_refused_and_named(address: str, named: str) -> None:
    with pytest.raises(RecipientAddressError, match=named.replace("+", r"\+")):
        recipient_key(address)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "erin",
        "erin@",
        "@example.net",
        "erin@@example.net",
        "erin@example..net",
        "Erin <erin@example.net>",
        '"erin"@example.net',
        "erin@[127.0.0.1]",
        "erin@example.net, bob@example.net",
        "erin@localhost",
    ],
)
def test_what_is_not_one_address_has_no_key(text: str) -> None:
    with pytest.raises(RecipientAddressError):
        recipient_key(text)


# --- Duplicate recipients within one message ---------------------------------------------------


def send_args(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "from": SENDER,
        "to": ["erin@example.net"],
        "subject": "Report",
        "text": "Hello",
        "category": "transactional",
    }
    raw.update(overrides)
    return raw


def errors_of(raw: dict[str, Any]) -> dict[tuple[str | int, ...], str]:
    with pytest.raises(ValidationError) as caught:
        EmailSendArgs.model_validate(raw)
    return {tuple(e["loc"]): e["msg"] for e in caught.value.errors()}


@pytest.mark.parametrize(
    ("overrides", "location"),
    [
        ({"to": ["erin@example.net", "Erin@example.net"]}, ("to", 1)),
        ({"cc": ["ERIN@EXAMPLE.NET"]}, ("cc", 0)),
        ({"bcc": [{"address": "eRiN@example.net", "name": "Erin"}]}, ("bcc", 0)),
        ({"to": ["x@exämple.net"], "cc": ["X@XN--EXMPLE-CUA.NET"]}, ("cc", 0)),
        ({"to": ["erin@example.net"], "cc": ["bob@example.net"], "bcc": ["Bob <BOB@example.net>"]}, ("bcc", 0)),
    ],
)
def test_one_mailbox_named_twice_in_any_spelling_is_refused(
    overrides: dict[str, Any], location: tuple[str | int, ...]
) -> None:
    message = errors_of(send_args(**overrides))[location]
    assert "is the same mailbox as" in message
    assert "name each recipient once" in message


def test_the_envelope_keeps_the_spelling_and_the_key_names_the_mailbox() -> None:
    parsed = EmailSendArgs.model_validate(send_args(to=["Erin@EXAMPLE.net"], cc=["bob@exämple.net"]))
    assert parsed.recipients() == ["Erin@example.net", "bob@xn--exmple-cua.net"]
    assert parsed.recipient_keys() == {
        "Erin@example.net": "erin@example.net",
        "bob@xn--exmple-cua.net": "bob@xn--exmple-cua.net",
    }


@pytest.mark.parametrize(
    ("field", "value", "location"),
    [
        ("to", ["e\u200brin@example.net"], ("to", 0)),
        ("to", ["erin@exa\u200dmple.net"], ("to", 0)),
        ("cc", [{"address": "erin\u202e@example.net"}], ("cc", 0)),
        ("bcc", ["\ufefferin@example.net"], ("bcc", 0)),
        ("reply_to", "help\u00ad@example.net", ("reply_to",)),
    ],
)
def test_an_address_with_a_format_character_is_refused_naming_the_field(
    field: str, value: Any, location: tuple[str | int, ...]
) -> None:
    assert "U+" in errors_of(send_args(**{field: value}))[location]


# --- From and Reply-To display names ----------------------------------------------------------

ADDRESS_LIKE_NAMES = [
    "ceo@example.com",
    "CEO (ceo@example.com)",
    "ceo@example.com via Billing",
    "Team @ Acme",
    "ceo＠example.com",  # U+FF20 FULLWIDTH COMMERCIAL AT
    "ceo﹫example.com",  # U+FE6B SMALL COMMERCIAL AT
    "ceo [at] example.com",
    "ceo(at)example.com",
    "ceo {AT} example.com",
    "ceo at example dot com",
    "ceo at example.com",
    "ceo at example [dot] com",
    "=?utf-8?q?ceo=40example.com?=",  # an encoded-word, decoded it is an address
    "=?utf-8?b?Y2VvQGV4YW1wbGUuY29t?=",
    "ceo\u200b@example.com",  # a zero-width space before the at-sign
    "moc.elpmaxe@oec\u202e",  # reversed by a bidi override, shown as ceo@example.com
]


@pytest.mark.parametrize("name", ADDRESS_LIKE_NAMES)
def test_a_display_name_that_poses_as_an_address_is_refused(name: str) -> None:
    assert display_name_problem(name) is not None


@pytest.mark.parametrize(
    "name",
    [
        "Reports",
        "Billing team",
        "Support at Example Inc.",
        "Meet at 5.30",
        "O'Brien & Co.",
        "Jürgen Groß",
        "नमस्\u200dते",  # Devanagari with a zero-width joiner
        "\U0001f469\u200d\U0001f4bb Dev team",  # an emoji sequence joined by U+200D
    ],
)
def test_ordinary_display_names_are_accepted(name: str) -> None:
    assert display_name_problem(name) is None


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ('"ceo@example.com" <agent@agents.mail.example.com>', '"ceo@example.com"'),
        ("ceo@example.com <agent@agents.mail.example.com>", "ceo@example.com"),
        ("CEO (ceo@example.com) <agent@agents.mail.example.com>", "CEO (ceo@example.com)"),
        ({"address": "agent@agents.mail.example.com", "name": "ceo@example.com"}, "ceo@example.com"),
        ("agent@agents.mail.example.com", None),
        ({"address": "agent@agents.mail.example.com"}, None),
        (42, None),
    ],
)
def test_the_display_part_is_found_in_every_form_an_agent_sends(value: object, name: str | None) -> None:
    assert display_part(value) == name


@pytest.mark.parametrize("field", ["from", "reply_to"])
@pytest.mark.parametrize(
    "value",
    [
        '"ceo@example.com" <reports@agents.mail.example.com>',
        '"CEO (ceo＠example.com)" <reports@agents.mail.example.com>',
        {"address": "reports@agents.mail.example.com", "name": "ceo [at] example.com"},
        {"address": "reports@agents.mail.example.com", "name": "ceo﹫example.com"},
    ],
)
def test_the_model_refuses_an_address_like_from_or_reply_to_name(field: str, value: object) -> None:
    assert "display name" in errors_of(send_args(**{field: value}))[(field,)]


def test_an_address_like_name_of_a_recipient_is_not_a_sender_spoof_and_is_kept() -> None:
    parsed = EmailSendArgs.model_validate(send_args(to=['"erin@example.net" <erin@example.net>']))
    assert parsed.to[0].name == "erin@example.net"


# --- Unsubscribe tokens and bounces name the mailbox ------------------------------------------


def test_an_unsubscribe_token_names_the_mailbox_whatever_spelling_was_mailed() -> None:
    tokens = {
        sign_unsubscribe_token(SECRET, recipient=spelling, subdomain="agents.mail.example.com")
        for spelling in ["erin@example.net", "Erin@example.net", "ERIN@EXAMPLE.NET"]
    }
    [token] = tokens
    assert verify_unsubscribe_token(SECRET, token).recipient == "erin@example.net"


def legacy_token(recipient: str, subdomain: str = "agents.mail.example.com") -> str:
    """A v1 token as issued before recipients were keyed: the address as written, signed."""
    payload = _b64(f"{subdomain}\n{recipient}".encode())
    return f"v1.{payload}.{_b64(_mac(SECRET, 'v1', payload))}"


@pytest.mark.parametrize("spelling", ["Erin@example.net", "ERIN@EXAMPLE.NET", "erin@example.net"])
def test_a_token_issued_for_a_spelling_before_keys_still_names_the_mailbox(spelling: str) -> None:
    assert verify_unsubscribe_token(SECRET, legacy_token(spelling)).recipient == "erin@example.net"


@pytest.mark.parametrize("recipient", ["not an address", "e\u200brin@example.net", ""])
def test_a_signed_token_that_names_no_address_is_invalid(recipient: str) -> None:
    with pytest.raises(InvalidUnsubscribeTokenError, match="names no address"):
        verify_unsubscribe_token(SECRET, legacy_token(recipient))


@pytest.mark.parametrize("recipient", ["erin\n@example.net", "Erin <erin@example.net>", "e\u200brin@example.net"])
def test_no_token_is_signed_for_what_is_not_an_address(recipient: str) -> None:
    with pytest.raises(ValueError):
        sign_unsubscribe_token(SECRET, recipient=recipient, subdomain="agents.mail.example.com")


DSN = """From: MAILER-DAEMON@mx.example.net
To: bounces@agents.mail.example.com
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Could not deliver.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; {recipient}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 User unknown

--B--
"""


@pytest.mark.parametrize(
    ("reported", "key"),
    [
        ("ERIN@EXAMPLE.NET", "erin@example.net"),
        ("<Erin@Example.Net>", "erin@example.net"),
        ("Erin@exAMPLE.net", "erin@example.net"),
        ("Erin@XN--EXMPLE-CUA.NET", "erin@xn--exmple-cua.net"),
    ],
)
def test_a_bounce_names_the_mailbox_however_the_mta_spelled_it(reported: str, key: str) -> None:
    report = parse_dsn(DSN.format(recipient=reported).replace("\n", "\r\n").encode())
    assert [(r.recipient, r.kind.value, r.status) for r in report.recipients] == [(key, "hard", "5.1.1")]


# --- Budget caps are charged per mailbox -------------------------------------------------------


def caps_for(recipients: list[str]) -> dict[tuple[str, str], int]:
    config = parse_mail_config(
        config_data(per_recipient_daily=3, recipient_domain_hourly={"xn--exmple-cua.net": 10, "example.net": 10})
    )
    sub = config.subdomain(SUBDOMAIN)
    assert sub is not None
    caps = send_caps(sub, recipients, "mailer-bot", utcnow())
    return {(c.kind, c.cap.key): c.units for c in caps if c.kind in ("recipient_day", "recipient_domain_hour")}


def test_spellings_of_one_mailbox_share_one_recipient_counter() -> None:
    spellings = ["erin@example.net", "Erin@EXAMPLE.NET", "ＥＲＩＮ@example.net"]
    assert {recipient_cap_key(SUBDOMAIN, a) for a in spellings} == {f"mail:{SUBDOMAIN}:recipient:erin@example.net:day"}


def test_a_mailbox_reached_twice_in_one_send_is_charged_for_both_copies() -> None:
    # `email.send` refuses such a message; an action recorded before that rule still pays per copy.
    caps = caps_for(["Erin@example.net", "erin@example.net", "bob@exämple.net", "ann@xn--exmple-cua.net"])

    assert caps == {
        ("recipient_day", recipient_cap_key(SUBDOMAIN, "erin@example.net")): 2,
        ("recipient_day", recipient_cap_key(SUBDOMAIN, "bob@xn--exmple-cua.net")): 1,
        ("recipient_day", recipient_cap_key(SUBDOMAIN, "ann@xn--exmple-cua.net")): 1,
        ("recipient_domain_hour", recipient_domain_key(SUBDOMAIN, "example.net")): 2,
        ("recipient_domain_hour", recipient_domain_key(SUBDOMAIN, "xn--exmple-cua.net")): 2,
    }
