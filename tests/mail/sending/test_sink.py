"""The Maildir sink: a real SMTP server whose mail can be opened with any Maildir reader."""

from __future__ import annotations

import mailbox
import smtplib
from collections.abc import Callable
from pathlib import Path

from outbox.mail.sending.sink import MaildirSink, SinkScript, read_maildir

MESSAGE = (
    b"From: a@agents.mail.example.com\r\nTo: b@example.net\r\n"
    b"Message-ID: <s1@agents.mail.example.com>\r\nSubject: hi\r\n\r\nbody\r\n"
)


def test_received_mail_is_a_maildir_message_with_its_envelope(
    start_sink: Callable[..., MaildirSink], tmp_path: Path
) -> None:
    sink = start_sink()
    assert sink.port > 0
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("a@agents.mail.example.com", ["b@example.net", "c@example.net"], MESSAGE)
    [received] = read_maildir(sink.directory)
    assert received.content == MESSAGE
    assert received.envelope_from == "a@agents.mail.example.com"
    assert received.recipients == ("b@example.net", "c@example.net")
    assert received.message_id == "<s1@agents.mail.example.com>"
    # Any Maildir reader sees a normal message, with the envelope as a local delivery agent writes it.
    [stored] = list(mailbox.Maildir(sink.directory, create=False))
    assert stored["Return-Path"] == "<a@agents.mail.example.com>"
    assert stored.get_all("Delivered-To") == ["b@example.net", "c@example.net"]
    assert stored["Subject"] == "hi"


def test_scripts_can_change_while_the_sink_runs(start_sink: Callable[..., MaildirSink]) -> None:
    sink = start_sink(SinkScript(rcpt={"b@example.net": "550 5.1.1 No such user"}))
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.ehlo("agents.mail.example.com")
        client.mail("a@agents.mail.example.com")
        assert client.rcpt("b@example.net") == (550, b"5.1.1 No such user")
        client.rset()
        sink.set_script(SinkScript())
        client.mail("a@agents.mail.example.com")
        assert client.rcpt("b@example.net")[0] == 250
    assert sink.messages() == []


def test_two_sinks_listen_on_different_free_ports(start_sink: Callable[..., MaildirSink]) -> None:
    first, second = start_sink(), start_sink()
    assert first.port != second.port
    assert first.directory != second.directory
