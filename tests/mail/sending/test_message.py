"""`email.send` arguments: normalised addresses, no header injection, and the MIME built from them."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy
from typing import Any

import pytest
from pydantic import ValidationError

from outbox.mail.sending.message import EmailSendArgs, build_mime, message_id_for


def args(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "from": "Agent <bot@agents.mail.example.com>",
        "to": ["ann@example.net"],
        "subject": "Your report",
        "text": "Hello Ann",
        "category": "transactional",
    }
    raw.update(overrides)
    return {k: v for k, v in raw.items() if v is not None}


def error_locations(raw: dict[str, Any]) -> dict[tuple[str | int, ...], str]:
    with pytest.raises(ValidationError) as caught:
        EmailSendArgs.model_validate(raw)
    return {tuple(e["loc"]): e["msg"] for e in caught.value.errors()}


def test_addresses_are_validated_and_normalised() -> None:
    parsed = EmailSendArgs.model_validate(
        args(
            to=["Ann Example <Ann@EXAMPLE.net>", {"address": "bob@Example.org", "name": "Bob"}],
            cc=["carol@bücher.de"],
        )
    )
    assert parsed.sender.address == "bot@agents.mail.example.com"
    assert parsed.sender.name == "Agent"
    assert [m.address for m in parsed.to] == ["Ann@example.net", "bob@example.org"]
    assert parsed.to[1].name == "Bob"
    # Internationalised domains become their ASCII (IDNA) form: no relay needs SMTPUTF8.
    assert parsed.cc[0].address == "carol@xn--bcher-kva.de"
    assert parsed.recipients() == ["Ann@example.net", "bob@example.org", "carol@xn--bcher-kva.de"]


@pytest.mark.parametrize(
    ("overrides", "location"),
    [
        ({"subject": "Hi\r\nBcc: victim@example.org"}, ("subject",)),
        ({"subject": "Hi\nthere"}, ("subject",)),
        ({"subject": "Hi\u2028there"}, ("subject",)),
        ({"subject": "=?utf-8?q?Hi=0D=0ABcc:_x@example.org?="}, ("subject",)),
        ({"from": "Agent\r\nBcc: victim@example.org <bot@agents.mail.example.com>"}, ("from",)),
        ({"from": {"address": "bot@agents.mail.example.com", "name": "Agent\nBcc: x@example.org"}}, ("from",)),
        ({"to": ["ann@example.net\r\nBcc: victim@example.org"]}, ("to", 0)),
        ({"to": [{"address": "ann@example.net", "name": "Ann\r\n"}]}, ("to", 0)),
        ({"cc": ["x@example.org", "Carol\n <carol@example.org>"]}, ("cc", 1)),
        ({"reply_to": "help@example.com\nX-Evil: 1"}, ("reply_to",)),
    ],
)
def test_a_line_break_in_any_header_value_is_refused_on_its_field(
    overrides: dict[str, Any], location: tuple[str | int, ...]
) -> None:
    assert location in error_locations(args(**overrides))


def test_agents_cannot_add_headers() -> None:
    errors = error_locations(args(headers={"X-Priority": "1"}, bcc_header="x"))
    assert errors[("headers",)] == "Extra inputs are not permitted"
    assert ("bcc_header",) in errors


def test_a_missing_body_is_reported_on_text() -> None:
    assert error_locations(args(text=None)) == {("text",): "give a body: text and/or html"}
    assert error_locations(args(text=""))[("text",)] == "give a body: text and/or html"


def test_html_alone_is_a_body() -> None:
    assert EmailSendArgs.model_validate(args(text=None, html="<p>Hi</p>")).html == "<p>Hi</p>"


def test_bulk_mail_has_exactly_one_recipient() -> None:
    errors = error_locations(args(category="bulk", to=["a@example.net", "b@example.net"]))
    assert "exactly one recipient" in errors[("to",)]
    assert ("bcc",) in error_locations(args(category="bulk", bcc=["b@example.net"]))


def test_a_recipient_listed_twice_is_refused() -> None:
    errors = error_locations(args(to=["ann@example.net"], bcc=["Ann <ann@EXAMPLE.net>"]))
    assert (
        errors[("bcc", 0)]
        == "ann@example.net is the same mailbox as ann@example.net in to[0]: name each recipient once"
    )


def test_recipient_timezone_must_be_an_iana_zone() -> None:
    assert (
        "unknown IANA time zone" in error_locations(args(recipient_timezone="Europe/Nowhere"))[("recipient_timezone",)]
    )
    assert EmailSendArgs.model_validate(args(recipient_timezone="Asia/Tokyo")).recipient_timezone == "Asia/Tokyo"


def test_invalid_addresses_and_smtputf8_local_parts_are_refused() -> None:
    assert ("to", 0) in error_locations(args(to=["not-an-address"]))
    assert ("to", 0) in error_locations(args(to=["josé@example.net"]))
    assert ("to",) in error_locations(args(to=[]))


def test_the_json_schema_uses_the_wire_names() -> None:
    schema = EmailSendArgs.model_json_schema(by_alias=True)
    assert "from" in schema["properties"]
    assert set(schema["required"]) == {"from", "to", "subject", "category"}
    assert schema["additionalProperties"] is False


def build(**overrides: Any) -> tuple[bytes, email.message.EmailMessage]:
    parsed = EmailSendArgs.model_validate(args(**overrides))
    raw = build_mime(
        parsed,
        message_id="<act-1@agents.mail.example.com>",
        date=datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
    )
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return raw, message


def test_mime_is_seven_bit_crlf_and_decodes_back_to_the_arguments() -> None:
    raw, message = build(
        subject="Grüße aus Köln — ✓",
        text="Zeile eins\nZeile zwei: äöü\n.\n",
        html="<p>äöü</p>",
        to=[{"address": "ann@example.net", "name": "Änn, Example"}],
    )
    raw.decode("ascii")  # every byte is 7-bit
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert message["Subject"] == "Grüße aus Köln — ✓"
    assert message["To"].addresses[0].display_name == "Änn, Example"
    assert message["Message-ID"] == "<act-1@agents.mail.example.com>"
    assert message["Date"].datetime == datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    assert message.get_content_type() == "multipart/alternative"
    text_part = message.get_body(("plain",))
    assert text_part is not None
    assert text_part.get_content() == "Zeile eins\r\nZeile zwei: äöü\r\n.\r\n"
    assert raw.count(b"MIME-Version") == 1


def test_bcc_recipients_appear_in_no_header() -> None:
    raw, message = build(bcc=["hidden@example.org"], cc=["carol@example.org"])
    assert b"hidden@example.org" not in raw
    assert message["Bcc"] is None
    assert message["Cc"] == "carol@example.org"


def test_message_ids_derive_from_the_action() -> None:
    assert message_id_for("01J9ZQ4V8Z", "agents.mail.example.com") == "<01J9ZQ4V8Z@agents.mail.example.com>"
    odd = message_id_for("id with <spaces>", "agents.mail.example.com")
    assert odd.endswith("@agents.mail.example.com>")
    assert " " not in odd
    assert odd == message_id_for("id with <spaces>", "agents.mail.example.com")
