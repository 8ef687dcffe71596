"""Delivery with aiosmtplib to a real SMTP server (the Maildir sink) with scripted replies."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from outbox.mail.config import RelayConfig
from outbox.mail.sending.delivery import DeliveryReport, RecipientResult, SmtpDelivery
from outbox.mail.sending.sink import MaildirSink, SinkScript

SENDER = "bounces@agents.mail.example.com"
MESSAGE = (
    b"From: bot@agents.mail.example.com\r\nSubject: hi\r\nMessage-ID: <d1@x.example.com>\r\n\r\nHello\r\n.line\r\n"
)


def relay_for(sink: MaildirSink, **options: object) -> RelayConfig:
    return RelayConfig.model_validate({"host": sink.host, "port": sink.port, "starttls": False, **options})


def send(delivery: SmtpDelivery, relay: RelayConfig, recipients: list[str]) -> DeliveryReport:
    return delivery.deliver(
        relay, helo_name="agents.mail.example.com", envelope_from=SENDER, recipients=recipients, message=MESSAGE
    )


def test_a_delivered_message_arrives_byte_for_byte(
    start_sink: Callable[..., MaildirSink], delivery: SmtpDelivery
) -> None:
    sink = start_sink()
    report = send(delivery, relay_for(sink), ["ann@example.net", "bob@example.org"])
    assert report.relay == f"127.0.0.1:{sink.port}"
    assert not report.tls
    for result in report.recipients.values():
        assert result.code == 250
        assert result.stage == "data"
        assert result.message.startswith("2.0.0 Ok: queued as ")
        assert result.delivered
    [received] = sink.messages()
    assert received.content == MESSAGE  # dot-stuffing undone, nothing added
    assert received.envelope_from == SENDER
    assert received.recipients == ("ann@example.net", "bob@example.org")


def test_rcpt_refusals_are_per_recipient(start_sink: Callable[..., MaildirSink], delivery: SmtpDelivery) -> None:
    script = SinkScript(
        rcpt={"gone@example.net": "550 5.1.1 <gone@example.net>: User unknown", "full@example.net": 452}
    )
    sink = start_sink(script)
    report = send(delivery, relay_for(sink), ["ann@example.net", "gone@example.net", "full@example.net"])
    assert report.recipients["gone@example.net"] == RecipientResult(
        550, "5.1.1 <gone@example.net>: User unknown", "rcpt"
    )
    assert report.recipients["gone@example.net"].permanent
    assert report.recipients["full@example.net"].code == 452
    assert report.recipients["full@example.net"].retryable
    assert report.recipients["ann@example.net"].delivered
    [received] = sink.messages()
    assert received.recipients == ("ann@example.net",)


def test_a_data_refusal_applies_to_every_accepted_recipient(
    start_sink: Callable[..., MaildirSink], delivery: SmtpDelivery
) -> None:
    sink = start_sink(SinkScript(data={"bob@example.org": "451 4.7.1 Greylisted, try later"}))
    report = send(delivery, relay_for(sink), ["ann@example.net", "bob@example.org"])
    assert set(report.recipients.values()) == {RecipientResult(451, "4.7.1 Greylisted, try later", "data")}
    assert sink.messages() == []


def test_when_every_recipient_is_refused_no_data_is_sent_and_the_connection_stays_usable(
    start_sink: Callable[..., MaildirSink], delivery: SmtpDelivery
) -> None:
    sink = start_sink(SinkScript(rcpt={"gone@example.net": 550}))
    relay = relay_for(sink)
    refused = send(delivery, relay, ["gone@example.net"])
    assert refused.recipients["gone@example.net"].code == 550
    accepted = send(delivery, relay, ["ann@example.net"])
    assert accepted.recipients["ann@example.net"].delivered
    assert len(sink.messages()) == 1


def test_connections_are_reused_within_a_thread(start_sink: Callable[..., MaildirSink], delivery: SmtpDelivery) -> None:
    sink = start_sink()
    relay = relay_for(sink)
    for _ in range(3):
        send(delivery, relay, ["ann@example.net"])
    peers = {m.peer for m in sink.messages()}
    assert len(peers) == 1


def test_each_thread_has_its_own_connection(start_sink: Callable[..., MaildirSink], delivery: SmtpDelivery) -> None:
    sink = start_sink()
    relay = relay_for(sink)
    results: list[DeliveryReport] = []

    def worker() -> None:
        for _ in range(2):
            results.append(send(delivery, relay, ["ann@example.net"]))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.recipients["ann@example.net"].delivered for r in results)
    messages = sink.messages()
    assert len(messages) == 6
    assert len({m.peer for m in messages}) == 3


def test_a_connection_the_server_closed_is_replaced(
    start_sink: Callable[..., MaildirSink], delivery: SmtpDelivery
) -> None:
    sink = start_sink(idle_timeout=0.2)
    relay = relay_for(sink)
    send(delivery, relay, ["ann@example.net"])
    time.sleep(1.0)  # the sink drops the idle client after 0.2 s
    report = send(delivery, relay, ["bob@example.org"])
    assert report.recipients["bob@example.org"].delivered
    first, second = sink.messages()
    assert first.peer != second.peer


def test_an_unreachable_relay_is_a_retryable_failure_for_everyone(delivery: SmtpDelivery) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    relay = RelayConfig(host="127.0.0.1", port=port, starttls=False, timeout_seconds=2)
    report = send(delivery, relay, ["ann@example.net", "bob@example.org"])
    for result in report.recipients.values():
        assert result.code is None
        assert result.stage == "connect"
        assert result.retryable
        assert "Error connecting" in result.message


def test_starttls_is_used_when_offered_and_certificates_are_checked(
    start_sink: Callable[..., MaildirSink],
    delivery: SmtpDelivery,
    server_tls_context: ssl.SSLContext,
    tls_files: tuple[Path, Path, Path],
) -> None:
    sink = start_sink(tls_context=server_tls_context, require_starttls=True)
    trusted = relay_for(sink, starttls=True, require_tls=True, tls_ca_file=str(tls_files[2]))
    report = send(delivery, trusted, ["ann@example.net"])
    assert report.tls
    assert report.recipients["ann@example.net"].delivered

    untrusted = relay_for(sink, starttls=True, require_tls=True)  # the system CAs do not know it
    failed = send(delivery, untrusted, ["ann@example.net"])
    assert failed.recipients["ann@example.net"].stage == "connect"
    assert "CERTIFICATE_VERIFY_FAILED" in failed.recipients["ann@example.net"].message
    assert len(sink.messages()) == 1


def test_require_tls_refuses_a_relay_without_starttls(
    start_sink: Callable[..., MaildirSink], delivery: SmtpDelivery
) -> None:
    sink = start_sink()
    report = send(delivery, relay_for(sink, starttls=True, require_tls=True), ["ann@example.net"])
    result = report.recipients["ann@example.net"]
    assert result.stage == "connect"
    assert result.retryable
    assert "STARTTLS" in result.message
    assert sink.messages() == []
    # Without require_tls the same relay is used in clear text.
    assert send(delivery, relay_for(sink, starttls=True), ["ann@example.net"]).recipients["ann@example.net"].delivered


def test_relay_login_uses_the_credentials_from_the_environment(
    start_sink: Callable[..., MaildirSink],
    delivery: SmtpDelivery,
    server_tls_context: ssl.SSLContext,
    tls_files: tuple[Path, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sink = start_sink(tls_context=server_tls_context, require_starttls=True, credentials=("agent", "s3cret"))
    relay = relay_for(
        sink,
        starttls=True,
        require_tls=True,
        tls_ca_file=str(tls_files[2]),
        username_env="OUTBOX_TEST_RELAY_USER",
        password_env="OUTBOX_TEST_RELAY_PASSWORD",
    )
    monkeypatch.setenv("OUTBOX_TEST_RELAY_USER", "agent")
    monkeypatch.setenv("OUTBOX_TEST_RELAY_PASSWORD", "wrong")
    refused = send(delivery, relay, ["ann@example.net"]).recipients["ann@example.net"]
    assert (refused.code, refused.stage) == (535, "connect")
    assert refused.retryable  # a login problem says nothing about the recipient

    monkeypatch.setenv("OUTBOX_TEST_RELAY_PASSWORD", "s3cret")
    assert send(delivery, relay, ["ann@example.net"]).recipients["ann@example.net"].delivered


def test_results_round_trip_through_their_stored_form() -> None:
    result = RecipientResult(550, "5.1.1 User unknown", "rcpt")
    assert RecipientResult.from_dict(result.as_dict()) == result
    assert result.as_dict() == {"code": 550, "message": "5.1.1 User unknown", "stage": "rcpt"}
