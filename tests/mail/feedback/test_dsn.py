"""Bounce feedback: RFC 3464 DSNs parsed with flufl.bounce, and provider webhook events."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from outbox.mail.feedback.dsn import BouncedRecipient, BounceKind, parse_dsn
from outbox.mail.feedback.events import BounceEvent, ComplaintEvent, UnsubscribeEvent, parse_provider_events

# What Postfix sends back: a multipart/report (RFC 6522) with a human part, the machine-readable
# message/delivery-status part (RFC 3464), and the returned message's headers.
POSTFIX_DSN = b"""Return-Path: <>
Received: by mx.example.net (Postfix) id 4F2A1C0123; Mon,  2 Mar 2026 12:00:05 +0000 (UTC)
Date: Mon,  2 Mar 2026 12:00:05 +0000 (UTC)
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: bounces@agents.mail.example.com
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4F2A1C0123.1772452805/mx.example.net"
Message-Id: <20260302120005.4F2A1C0123@mx.example.net>

This is a MIME-encapsulated message.

--4F2A1C0123.1772452805/mx.example.net
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<Nobody@Example.NET>: host mx.example.net[192.0.2.25] said: 550 5.1.1
    <nobody@example.net>: Recipient address rejected: User unknown

--4F2A1C0123.1772452805/mx.example.net
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
X-Postfix-Queue-ID: 4F2A1C0123
X-Postfix-Sender: rfc822; bounces@agents.mail.example.com
Arrival-Date: Mon,  2 Mar 2026 12:00:04 +0000 (UTC)

Final-Recipient: rfc822; Nobody@Example.NET
Original-Recipient: rfc822;Nobody@Example.NET
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.net>: Recipient address
    rejected: User unknown in local recipient table

Final-Recipient: rfc822; busy@example.net
Original-Recipient: rfc822;busy@example.net
Action: delayed
Status: 4.2.2
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; 452 4.2.2 Mailbox full

--4F2A1C0123.1772452805/mx.example.net
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <bounces@agents.mail.example.com>
From: Agent <bot@agents.mail.example.com>
To: Nobody@Example.NET, busy@example.net
Subject: Your report
Message-ID: <01J9ZQ4V8Z@agents.mail.example.com>

--4F2A1C0123.1772452805/mx.example.net--
""".replace(b"\n", b"\r\n")


def test_a_postfix_dsn_gives_hard_and_soft_failures_with_their_status() -> None:
    report = parse_dsn(POSTFIX_DSN)
    assert report.is_bounce
    assert report.recipients == (
        BouncedRecipient(
            "nobody@example.net",  # the mailbox (recipient key) the MTA spelled Nobody@
            BounceKind.HARD,
            "5.1.1",
            "550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown in local recipient table",
        ),
        BouncedRecipient("busy@example.net", BounceKind.SOFT, "4.2.2", "452 4.2.2 Mailbox full"),
    )
    assert report.original_message_id == "<01J9ZQ4V8Z@agents.mail.example.com>"
    assert report.reporting_mta == "mx.example.net"


def test_a_dsn_returning_the_full_message_links_it_by_message_id() -> None:
    full = POSTFIX_DSN.replace(b"Content-Type: text/rfc822-headers", b"Content-Type: message/rfc822").replace(
        b"Message-ID: <01J9ZQ4V8Z@agents.mail.example.com>\r\n",
        b"Message-ID: <01J9ZQ4V8Z@agents.mail.example.com>\r\n\r\nHello\r\n",
    )
    assert parse_dsn(full).original_message_id == "<01J9ZQ4V8Z@agents.mail.example.com>"


def test_an_ordinary_message_is_not_a_bounce() -> None:
    report = parse_dsn(
        b"From: ann@example.net\r\nTo: bot@agents.mail.example.com\r\nSubject: thanks\r\n\r\nThanks!\r\n"
    )
    assert not report.is_bounce
    assert report.original_message_id is None


def event_body(*events: dict[str, object]) -> str:
    return json.dumps({"events": list(events)})


BASE = {"event_id": "evt-1", "recipient": "Ann@Example.NET", "occurred_at": "2026-03-02T12:00:00Z"}


def test_provider_events_parse_into_typed_events() -> None:
    events = parse_provider_events(
        event_body(
            {**BASE, "type": "bounce", "kind": "hard", "status": "5.1.1", "message_id": "<m@agents.mail.example.com>"},
            {
                **BASE,
                "event_id": "evt-2",
                "type": "complaint",
                "feedback_type": "abuse",
                "sender_domain": "Agents.Mail.Example.com.",
            },
            {**BASE, "event_id": "evt-3", "type": "unsubscribe"},
        )
    )
    bounce, complaint, unsubscribe = events
    assert isinstance(bounce, BounceEvent)
    assert (bounce.recipient, bounce.kind, bounce.status) == ("Ann@example.net", "hard", "5.1.1")
    assert isinstance(complaint, ComplaintEvent)
    assert complaint.sender_domain == "agents.mail.example.com"
    assert isinstance(unsubscribe, UnsubscribeEvent)


@pytest.mark.parametrize(
    ("event", "location"),
    [
        ({**BASE, "type": "bounce"}, ("events", 0, "bounce", "kind")),
        ({**BASE, "type": "bounced", "kind": "hard"}, ("events", 0)),
        ({**BASE, "type": "bounce", "kind": "hard", "status": "550"}, ("events", 0, "bounce", "status")),
        ({**BASE, "type": "unsubscribe", "recipient": "not an address"}, ("events", 0, "unsubscribe", "recipient")),
        (
            {**BASE, "type": "unsubscribe", "occurred_at": "2026-03-02T12:00:00"},
            ("events", 0, "unsubscribe", "occurred_at"),
        ),
        ({**BASE, "type": "complaint", "extra": 1}, ("events", 0, "complaint", "extra")),
    ],
)
def test_malformed_events_are_refused_naming_the_field(event: dict[str, object], location: tuple[object, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_provider_events(event_body(event))
    assert location in [tuple(e["loc"]) for e in caught.value.errors()]


def test_an_empty_batch_is_refused() -> None:
    with pytest.raises(ValidationError):
        parse_provider_events(event_body())
