"""`email.send` end to end: parse, build, sign, self-verify, deliver to a real SMTP sink, verify at
the receiving end against the key published in a real DNS server."""

from __future__ import annotations

import base64
import email
import json
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email import policy
from pathlib import Path
from typing import Any

import dkim
import dns.resolver
import pytest

from outbox.mail.config import MailConfig
from outbox.mail.dns.checks import make_resolver
from outbox.mail.sending.delivery import SmtpDelivery
from outbox.mail.sending.dkim_signing import DkimKey, dkim_record_name, generate_key, write_private_key
from outbox.mail.sending.message import EmailSendArgs
from outbox.mail.sending.sink import MaildirSink, SinkScript
from outbox.mail.sending.tool import EmailSendTool
from outbox.mail.sending.unsubscribe import verify_unsubscribe_token
from outbox.toolkit.base import Deferred, ExecutionContext, Failed, Succeeded, Tool, ToolArgumentsError
from tests.mail.conftest import SECRET, SELECTOR, SUBDOMAIN
from tests.mail.dns_server import LoopbackDns
from tests.mail.sending.fakes import AllowAllGate

SENDER = f"Reports Agent <reports@{SUBDOMAIN}>"


def context(action_id: str = "act-0001", attempt: int = 1) -> ExecutionContext:
    return ExecutionContext(
        action_id=action_id,
        agent_id="agent-1",
        agent_name="reporter",
        on_behalf_of="user:ann",
        idempotency_key="k-1",
        attempt=attempt,
    )


def raw_args(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "from": SENDER,
        "to": ["ann@example.net"],
        "subject": "Weekly report — Grüße",
        "text": "Hello Ann,\n\nyour report is ready.\n",
        "html": "<p>Hello Ann,</p><p>your report is ready.</p>",
        "category": "transactional",
    }
    raw.update(overrides)
    return raw


def published_key_lookup(dns_server: LoopbackDns) -> Callable[..., bytes | None]:
    """A dkimpy dnsfunc that asks the loopback DNS server, as a receiving MTA asks DNS."""
    resolver = make_resolver(dns_server.address, timeout=3)

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode(), "TXT", lifetime=timeout)
        except dns.resolver.NXDOMAIN:
            return None
        return b"".join(b"".join(rdata.strings) for rdata in answer)

    return lookup


class Harness:
    def __init__(self, config: MailConfig, sink: MaildirSink, delivery: SmtpDelivery, **tool_options: Any) -> None:
        self.gate = tool_options.pop("gate", AllowAllGate())
        self.sink = sink
        self.tool = EmailSendTool(config, gate=self.gate, unsubscribe_secret=SECRET, delivery=delivery, **tool_options)

    def send(self, ctx: ExecutionContext | None = None, **overrides: Any) -> Succeeded | Failed | Deferred:
        return self.tool.execute(ctx or context(), self.tool.parse_args(raw_args(**overrides)))


@pytest.fixture
def harness(
    make_config: Callable[..., MailConfig],
    start_sink: Callable[..., MaildirSink],
    delivery: SmtpDelivery,
    rsa_key: DkimKey,
) -> Callable[..., Harness]:
    def make(
        key: DkimKey = rsa_key, script: SinkScript | None = None, config: dict[str, Any] | None = None, **options: Any
    ) -> Harness:
        sink = start_sink(script)
        return Harness(make_config(key, sink, **(config or {})), sink, delivery, **options)

    return make


@pytest.mark.parametrize("key_fixture", ["rsa_key", "ed25519_key"])
def test_delivered_mail_verifies_against_the_published_key(
    key_fixture: str, request: pytest.FixtureRequest, harness: Callable[..., Harness], dns_server: LoopbackDns
) -> None:
    key: DkimKey = request.getfixturevalue(key_fixture)
    dns_server.publish(dkim_record_name(SELECTOR, SUBDOMAIN), key.txt_record())
    h = harness(key)

    outcome = h.send(to=["ann@example.net"], cc=["Bob <bob@example.org>"], bcc=["audit@example.com"])

    assert isinstance(outcome, Succeeded), outcome
    assert outcome.summary == "delivered to 3 of 3 recipient(s)"
    assert outcome.artifact["message_id"] == f"<act-0001@{SUBDOMAIN}>"
    assert outcome.artifact["subdomain"] == SUBDOMAIN
    assert outcome.artifact["dkim_selector"] == SELECTOR
    for result in outcome.response["recipients"].values():
        assert result["code"] == 250
        assert result["stage"] == "data"
    [received] = h.sink.messages()
    # The artifact holds exactly the bytes the relay received; the receiver verifies them via DNS.
    assert base64.b64decode(outcome.artifact["mime_b64"]) == received.content
    assert dkim.verify(received.content, dnsfunc=published_key_lookup(dns_server))
    assert received.envelope_from == f"reports@{SUBDOMAIN}"
    assert received.recipients == ("ann@example.net", "bob@example.org", "audit@example.com")
    assert b"audit@example.com" not in received.content
    parsed = email.message_from_bytes(received.content, policy=policy.default)
    assert parsed["Subject"] == "Weekly report — Grüße"
    assert parsed["From"] == SENDER
    assert parsed["List-Unsubscribe"] is None  # transactional mail has none
    json.dumps(outcome.artifact)
    json.dumps(outcome.response)


def test_bulk_mail_carries_signed_one_click_unsubscribe(
    harness: Callable[..., Harness], dns_server: LoopbackDns, ed25519_key: DkimKey
) -> None:
    dns_server.publish(dkim_record_name(SELECTOR, SUBDOMAIN), ed25519_key.txt_record())
    h = harness(ed25519_key)

    outcome = h.send(category="bulk", to=["Ann <ann@example.net>"])

    assert isinstance(outcome, Succeeded)
    [received] = h.sink.messages()
    parsed = email.message_from_bytes(received.content, policy=policy.default)
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https_uri, mailto_uri = str(parsed["List-Unsubscribe"]).split(", ")
    prefix = "<https://outbox.example.com/unsubscribe/"
    assert https_uri.startswith(prefix)
    token = https_uri.removeprefix(prefix).removesuffix(">")
    unsubscribe = verify_unsubscribe_token(SECRET, token)
    assert (unsubscribe.recipient, unsubscribe.subdomain) == ("ann@example.net", SUBDOMAIN)
    assert mailto_uri == f"<mailto:unsubscribe@{SUBDOMAIN}?subject=unsubscribe%20{token}>"
    signature = str(parsed["DKIM-Signature"])
    signed_headers = "".join(signature.split("h=")[1].split(";", maxsplit=1)[0].split()).split(":")
    assert "list-unsubscribe" in signed_headers
    assert "list-unsubscribe-post" in signed_headers
    assert dkim.verify(received.content, dnsfunc=published_key_lookup(dns_server))
    # Removing the headers in transit breaks the signature (RFC 8058 §4 requires them signed).
    stripped = b"\r\n".join(
        line for line in received.content.split(b"\r\n") if not line.startswith(b"List-Unsubscribe-Post")
    )
    assert not dkim.verify(stripped, dnsfunc=published_key_lookup(dns_server))


def test_a_key_file_replaced_in_place_signs_the_next_message(
    harness: Callable[..., Harness], dns_server: LoopbackDns, rsa_key: DkimKey
) -> None:
    h = harness(rsa_key)
    sub = h.tool.config.subdomain(SUBDOMAIN)
    assert sub is not None
    assert sub.dkim.key_file is not None
    dns_server.publish(dkim_record_name(SELECTOR, SUBDOMAIN), rsa_key.txt_record())
    assert isinstance(h.send(context("act-0001")), Succeeded)

    rotated = generate_key("rsa-sha256")
    write_private_key(sub.dkim.key_file.with_suffix(".new"), rotated)
    os.replace(sub.dkim.key_file.with_suffix(".new"), sub.dkim.key_file)
    dns_server.reset()  # the record is replaced too, as the rotation's DNS change would
    dns_server.publish(dkim_record_name(SELECTOR, SUBDOMAIN), rotated.txt_record())
    assert isinstance(h.send(context("act-0002")), Succeeded)

    before, after = sorted(h.sink.messages(), key=lambda m: b"act-0002" in m.content)
    assert b"act-0002" in after.content
    lookup = published_key_lookup(dns_server)
    assert dkim.verify(after.content, dnsfunc=lookup)
    assert not dkim.verify(before.content, dnsfunc=lookup)  # signed with the key it replaced


def test_mixed_2xx_and_5xx_succeeds_for_the_delivered_and_records_every_reply(
    harness: Callable[..., Harness],
) -> None:
    h = harness(script=SinkScript(rcpt={"gone@example.net": "550 5.1.1 <gone@example.net>: User unknown"}))

    outcome = h.send(to=["ann@example.net", "gone@example.net"])

    assert isinstance(outcome, Succeeded)
    assert outcome.summary == "delivered to 1 of 2 recipient(s), 1 refused"
    assert outcome.response["recipients"]["gone@example.net"] == {
        "code": 550,
        "message": "5.1.1 <gone@example.net>: User unknown",
        "stage": "rcpt",
    }
    assert outcome.response["recipients"]["ann@example.net"]["code"] == 250


def test_all_4xx_is_a_retryable_failure_and_all_5xx_a_permanent_one(harness: Callable[..., Harness]) -> None:
    greylisted = harness(script=SinkScript(data={"ann@example.net": "451 4.7.1 Greylisted"}))
    outcome = greylisted.send(to=["ann@example.net", "bob@example.org"])
    assert isinstance(outcome, Failed)
    assert outcome.retryable
    assert "2 of 2 recipient(s) not reached yet" in outcome.reason
    assert outcome.response["recipients"]["bob@example.org"]["code"] == 451
    assert outcome.artifact["mime_b64"]  # what was attempted is recorded too

    refused = harness(script=SinkScript(rcpt={"ann@example.net": 550, "bob@example.org": 554}))
    outcome = refused.send(to=["ann@example.net", "bob@example.org"])
    assert isinstance(outcome, Failed)
    assert not outcome.retryable
    assert outcome.reason.startswith("every recipient refused: ann@example.net: 550")


def test_a_retry_sends_only_to_recipients_not_yet_settled(harness: Callable[..., Harness]) -> None:
    h = harness(script=SinkScript(rcpt={"busy@example.org": 452, "gone@example.net": 550}))
    recipients = ["ann@example.net", "busy@example.org", "gone@example.net"]

    first = h.send(context(attempt=1), to=recipients)
    assert isinstance(first, Failed)
    assert first.retryable
    assert "busy@example.org: 452" in first.reason

    h.sink.set_script(SinkScript())  # the mailbox has room again
    second = h.send(context(attempt=2), to=recipients)

    assert isinstance(second, Succeeded)
    assert second.summary == "delivered to 2 of 3 recipient(s), 1 refused"
    assert {r: v["code"] for r, v in second.response["recipients"].items()} == {
        "ann@example.net": 250,
        "busy@example.org": 250,
        "gone@example.net": 550,
    }
    one, two = h.sink.messages()
    assert one.recipients == ("ann@example.net",)
    assert two.recipients == ("busy@example.org",)  # never ann twice, never gone again
    assert one.message_id == two.message_id == f"<act-0001@{SUBDOMAIN}>"


def test_outside_the_send_window_mail_is_deferred_to_its_opening(harness: Callable[..., Harness]) -> None:
    window = {
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "start": "08:00",
        "end": "18:00",
        "timezone": "Europe/Berlin",
    }
    sunday_evening = datetime(2026, 3, 8, 20, 0, tzinfo=UTC)  # 21:00 in Berlin
    h = harness(config={"send_window": window}, clock=lambda: sunday_evening)

    outcome = h.send()

    assert outcome == Deferred(
        datetime(2026, 3, 9, 7, 0, tzinfo=UTC), f"outside the send window of {SUBDOMAIN} (in Europe/Berlin)"
    )
    assert h.sink.messages() == []
    assert h.gate.attempts == []
    # A recipient whose Monday morning has already begun (09:00 in Auckland, UTC+13) gets it now.
    assert isinstance(h.send(recipient_timezone="Pacific/Auckland"), Succeeded)


class DeferringGate(AllowAllGate):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[list[str]] = []

    def admit(self, ctx: ExecutionContext, args: EmailSendArgs, recipients: Sequence[str]) -> Any:
        self.asked.append(list(recipients))
        return Deferred(datetime(2026, 3, 9, 8, 0, tzinfo=UTC), "hourly budget of agents.mail.example.com used up")


def test_the_gate_decides_just_before_delivery(harness: Callable[..., Harness]) -> None:
    gate = DeferringGate()
    h = harness(gate=gate)

    outcome = h.send(to=["ann@example.net", "bob@example.org"])

    assert outcome == Deferred(
        datetime(2026, 3, 9, 8, 0, tzinfo=UTC), "hourly budget of agents.mail.example.com used up"
    )
    assert gate.asked == [["ann@example.net", "bob@example.org"]]
    assert h.sink.messages() == []


def test_suppressed_recipients_are_left_out_and_recorded(harness: Callable[..., Harness]) -> None:
    suppressed: Mapping[str, str] = {"gone@example.net": "suppressed: hard bounce on 2026-02-01"}
    h = harness(gate=AllowAllGate(suppressed=suppressed))

    outcome = h.send(to=["ann@example.net", "gone@example.net"])

    assert isinstance(outcome, Succeeded)
    assert outcome.response["recipients"]["gone@example.net"] == {
        "code": None,
        "message": "suppressed: hard bounce on 2026-02-01",
        "stage": "suppressed",
    }
    [received] = h.sink.messages()
    assert received.recipients == ("ann@example.net",)
    [attempt] = h.gate.attempts
    assert attempt.mime == received.content
    assert set(attempt.results) == {"ann@example.net", "gone@example.net"}

    only_suppressed = h.send(context("act-0002"), to=["gone@example.net"])
    assert isinstance(only_suppressed, Failed)
    assert not only_suppressed.retryable
    assert len(h.sink.messages()) == 1


def test_an_unreachable_relay_is_retryable(
    make_config: Callable[..., MailConfig], delivery: SmtpDelivery, rsa_key: DkimKey
) -> None:
    tool = EmailSendTool(make_config(rsa_key), gate=AllowAllGate(), unsubscribe_secret=SECRET, delivery=delivery)
    # make_config without a sink points the relay at port 9 (discard), where nothing listens.
    outcome = tool.execute(context(), tool.parse_args(raw_args()))
    assert isinstance(outcome, Failed)
    assert outcome.retryable
    assert outcome.response["recipients"]["ann@example.net"]["stage"] == "connect"


def test_a_missing_dkim_key_fails_without_sending(
    harness: Callable[..., Harness], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness(config={"dkim": {"selector": SELECTOR, "key_env": "OUTBOX_TEST_ABSENT_KEY"}})
    monkeypatch.delenv("OUTBOX_TEST_ABSENT_KEY", raising=False)
    outcome = h.send()
    assert isinstance(outcome, Failed)
    assert not outcome.retryable
    assert outcome.reason == f"DKIM for {SUBDOMAIN}: environment variable OUTBOX_TEST_ABSENT_KEY is not set"
    assert h.sink.messages() == []
    assert h.gate.attempts == []


def problems(tool: EmailSendTool, **overrides: Any) -> tuple[list[tuple[str, str]], str | None]:
    with pytest.raises(ToolArgumentsError) as caught:
        tool.parse_args(raw_args(**overrides))
    return [(p.field, p.message) for p in caught.value.problems], caught.value.hint


def test_the_primary_domain_is_refused_explicitly(harness: Callable[..., Harness]) -> None:
    tool = harness().tool
    assert problems(tool, **{"from": "billing@example.com"}) == (
        [("from", "agent mail never uses the primary domain")],
        f"send from an address at one of: {SUBDOMAIN}",
    )


def test_a_sender_outside_the_subdomains_is_refused_with_the_allowed_ones(harness: Callable[..., Harness]) -> None:
    tool = harness().tool
    found, hint = problems(tool, **{"from": "bot@billing.example.com"})
    assert found == [("from", "billing.example.com is not a configured agent sending subdomain")]
    assert hint == f"send from an address at one of: {SUBDOMAIN}"


def test_limits_from_the_config_are_enforced(harness: Callable[..., Harness]) -> None:
    tool = harness(config={}).tool
    many = [f"r{i}@example.net" for i in range(51)]
    assert problems(tool, to=many)[0] == [("to", "51 recipients; at most 50")]
    assert problems(tool, text="x" * 600_000, html=None)[0] == [("text", "body over 524288 bytes")]


def test_policy_targets_one_per_recipient(harness: Callable[..., Harness]) -> None:
    tool = harness().tool
    args = tool.parse_args(raw_args(to=["ann@example.net"], cc=["bob@example.org"], bcc=["c@example.com"]))
    assert [(t.object, t.act) for t in tool.targets(args)] == [
        (f"mail:{SUBDOMAIN}/ann@example.net", "send"),
        (f"mail:{SUBDOMAIN}/bob@example.org", "send"),
        (f"mail:{SUBDOMAIN}/c@example.com", "send"),
    ]


def test_the_tool_honours_the_tool_contract(harness: Callable[..., Harness]) -> None:
    tool = harness().tool
    assert isinstance(tool, Tool)
    assert tool.name == "email.send"
    schema = tool.args_schema()
    json.dumps(schema)
    assert schema["properties"]["category"]["enum"] == ["transactional", "bulk"]
    with pytest.raises(ValueError, match="32 bytes"):
        EmailSendTool(tool.config, gate=AllowAllGate(), unsubscribe_secret=b"short")
