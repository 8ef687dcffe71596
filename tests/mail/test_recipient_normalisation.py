"""Recipients are counted as the mailbox they are (issue 10), through the whole pipeline on SQLite
and PostgreSQL: budgets, suppression, one-click unsubscribe, bounces and complaints, and policy
all see `erin@example.net`, however the agent, a provider or a bounce spelled it. And a From line
cannot dress an agent up as someone else."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from outbox.budgets.service import used, window_start
from outbox.mail.budgets.ledger import DAY, HOUR, recipient_cap_key, recipient_domain_key
from outbox.mail.models import MailFeedbackEvent, MailSuppression
from outbox.mail.sending.message import message_id_for
from outbox.mail.sending.unsubscribe import _b64, _mac, sign_unsubscribe_token
from outbox.sqltypes import utcnow
from tests.mail.world import (
    EVENTS_TOKEN,
    SUBDOMAIN,
    UNSUBSCRIBE_SECRET,
    MailCli,
    MailWorld,
    admin_headers,
    bounce_dsn,
    message,
)
from tests.support.calls import load

IDN = "xn--exmple-cua.net"  # exämple.net

Api = Callable[[], TestClient]


def used_now(world: MailWorld, key: str, window: timedelta) -> int:
    with world.rt.db.session() as session:
        return used(session, key, window)


def suppressions(world: MailWorld) -> dict[tuple[str, str], str]:
    with world.rt.db.session() as session:
        return {(s.recipient, s.scope): s.reason for s in session.exec(select(MailSuppression)).all()}


def post_action(client: TestClient, world: MailWorld, args: dict[str, Any]) -> Any:
    return client.post(
        "/v1/actions",
        json={"tool": "email.send", "args": args},
        headers={"Authorization": f"Bearer {world.agent_key}", "Idempotency-Key": str(uuid.uuid4())},
    )


# --- Budgets ---------------------------------------------------------------------------------


def test_six_sends_to_three_spellings_of_one_mailbox_deliver_exactly_its_cap_of_three(world: MailWorld) -> None:
    world.configure(per_recipient_daily=3)
    spellings = ["erin@example.net", "Erin@example.net", "ERIN@example.net"] * 2

    outcomes = [world.send(message(spelling)) for spelling in spellings]

    assert [status for _, status in outcomes] == ["succeeded"] * 3 + ["deferred"] * 3
    assert len(world.sink.messages()) == 3
    tomorrow = window_start(utcnow(), DAY) + DAY
    for action_id, _ in outcomes[3:]:
        action = load(world.rt, action_id)
        assert action.not_before == tomorrow
        assert "daily cap per recipient (erin@example.net)" in (action.status_reason or "")
    assert used_now(world, recipient_cap_key(SUBDOMAIN, "erin@example.net"), DAY) == 3
    assert used_now(world, recipient_cap_key(SUBDOMAIN, "ERIN@example.net"), DAY) == 3  # one counter


def test_the_envelope_and_headers_keep_the_spelling_the_agent_wrote(world: MailWorld) -> None:
    world.configure(per_recipient_daily=3)

    world.send(message("Erin@EXAMPLE.net"))

    [delivered] = world.sink.messages()
    assert delivered.recipients == ("Erin@example.net",)
    assert b"To: Erin@example.net" in delivered.content


def test_a_recipient_domain_cap_counts_every_form_of_an_internationalised_domain_once(world: MailWorld) -> None:
    world.allow_recipients_at(IDN)
    world.configure(recipient_domain_hourly={IDN: 2})

    statuses = [
        world.send(message(address))[1]
        for address in ["a@exämple.net", "b@EXÄMPLE.NET", "c@XN--EXMPLE-CUA.NET", "d@ｅxämple.net"]
    ]

    assert statuses == ["succeeded", "succeeded", "deferred", "deferred"]
    assert used_now(world, recipient_domain_key(SUBDOMAIN, IDN), HOUR) == 2


@pytest.mark.parametrize(
    ("field", "spelling"), [("to", "Erin@example.net"), ("cc", "ERIN@EXAMPLE.NET"), ("bcc", "Erin <eRiN@example.net>")]
)
def test_one_mailbox_twice_in_one_message_is_refused_at_submission(
    world: MailWorld, api: Api, field: str, spelling: str
) -> None:
    world.configure()
    to = ["erin@example.net", spelling] if field == "to" else ["erin@example.net"]
    args = message(to, **({field: [spelling]} if field != "to" else {}))

    response = post_action(api(), world, args)

    assert response.status_code == 422
    index = 1 if field == "to" else 0
    [error] = response.json()["errors"]
    assert error["field"] == f"args.{field}[{index}]"
    assert "the same mailbox as erin@example.net in to[0]" in error["message"]
    assert world.sink.messages() == []


# --- Suppression, unsubscribe, bounces and complaints ------------------------------------------


def test_suppressing_one_spelling_suppresses_the_mailbox(world: MailWorld, api: Api) -> None:
    world.configure()
    client = api()
    added = client.post("/v1/admin/mail/suppressions", json={"recipient": "ERIN@Example.NET"}, headers=admin_headers())
    again = client.post("/v1/admin/mail/suppressions", json={"recipient": "erin@example.net"}, headers=admin_headers())

    statuses = [world.send(message(spelling))[1] for spelling in ["erin@example.net", "Erin@example.net"]]

    assert (added.status_code, added.json()["recipient"]) == (201, "erin@example.net")
    assert again.status_code == 200  # the same mailbox: already suppressed
    assert statuses == ["failed", "failed"]
    assert world.sink.messages() == []
    listed = client.get(
        "/v1/admin/mail/suppressions", params={"recipient": "eRIN@example.NET"}, headers=admin_headers()
    )
    assert [item["recipient"] for item in listed.json()["items"]] == ["erin@example.net"]
    removed = client.delete("/v1/admin/mail/suppressions/Erin@EXAMPLE.net", headers=admin_headers())
    assert removed.status_code == 200
    assert world.send(message("ERIN@example.net"))[1] == "succeeded"


def test_the_cli_finds_and_removes_a_suppression_by_any_spelling(world: MailWorld, cli: MailCli) -> None:
    world.configure()
    cli.use(world.rt)
    cli("mail", "suppression", "add", "ERIN@Example.NET")

    again = cli.printed(cli("mail", "suppression", "add", "erin@example.net"))
    listed = json.loads(cli.printed(cli("mail", "suppression", "list", "--recipient", "Erin@example.net", "--json")))
    removed = cli.printed(cli("mail", "suppression", "remove", "eRiN@EXAMPLE.net"))
    not_an_address = cli("mail", "suppression", "remove", "erin", ok=False)

    assert again == "already suppressed: erin@example.net (*, manual)"
    assert [item["recipient"] for item in listed["items"]] == ["erin@example.net"]
    assert removed == "removed: erin@example.net (*, manual)"
    assert not_an_address.exit_code == 1
    assert "is not an email address" in not_an_address.stderr


@pytest.mark.parametrize("text", ["not-an-address", "e\u200brin@example.net", "Erin <erin@example.net>"])
def test_the_suppression_admin_refuses_what_is_not_an_address(world: MailWorld, api: Api, text: str) -> None:
    world.configure()
    client = api()

    listed = client.get("/v1/admin/mail/suppressions", params={"recipient": text}, headers=admin_headers())
    removed = client.delete(f"/v1/admin/mail/suppressions/{text}", headers=admin_headers())

    assert (listed.status_code, removed.status_code) == (422, 422)
    assert listed.headers["content-type"] == "application/problem+json"
    assert "is not an email address" in listed.json()["detail"]


def legacy_token(recipient: str) -> str:
    """A token as issued before recipients were keyed: the address as the agent wrote it."""
    secret = UNSUBSCRIBE_SECRET.encode()
    payload = _b64(f"{SUBDOMAIN}\n{recipient}".encode())
    return f"v1.{payload}.{_b64(_mac(secret, 'v1', payload))}"


@pytest.mark.parametrize(
    "token",
    [
        lambda: sign_unsubscribe_token(UNSUBSCRIBE_SECRET.encode(), recipient="Erin@Example.net", subdomain=SUBDOMAIN),
        lambda: legacy_token("ERIN@EXAMPLE.NET"),
        lambda: legacy_token("Erin@example.net"),
    ],
    ids=["keyed-token", "legacy-upper", "legacy-mixed"],
)
def test_unsubscribing_one_spelling_stops_mail_to_every_spelling(
    world: MailWorld, api: Api, token: Callable[[], str]
) -> None:
    world.configure()

    response = api().post(f"/unsubscribe/{token()}")

    assert response.status_code == 200
    assert suppressions(world) == {("erin@example.net", SUBDOMAIN): "unsubscribe"}
    assert [world.send(message(s))[1] for s in ["erin@example.net", "eRiN@EXAMPLE.NET"]] == ["failed", "failed"]
    assert world.sink.messages() == []


@pytest.mark.parametrize("reported", ["ERIN@EXAMPLE.NET", "Erin@example.net", "erin@Example.Net"])
def test_a_bounce_for_one_spelling_suppresses_the_mailbox_and_finds_the_action(
    world: MailWorld, api: Api, reported: str
) -> None:
    world.configure()
    sent, status = world.send(message("erin@example.net"))
    assert status == "succeeded"

    response = api().post(
        "/v1/mail/dsn",
        content=bounce_dsn(reported, message_id_for(sent, SUBDOMAIN)),
        headers={"Authorization": f"Bearer {EVENTS_TOKEN}", "Content-Type": "message/rfc822"},
    )

    assert response.status_code == 200
    assert response.json()["suppressed"] == ["erin@example.net"]
    with world.rt.db.session() as session:
        [event] = session.exec(select(MailFeedbackEvent)).all()
    assert (event.recipient, event.action_id, event.subdomain) == ("erin@example.net", sent, SUBDOMAIN)
    assert world.send(message("Erin@EXAMPLE.net"))[1] == "failed"
    assert len(world.sink.messages()) == 1


@pytest.mark.parametrize(
    ("reported", "key", "sent_to"),
    [
        ("ERIN@EXAMPLE.NET", "erin@example.net", "erin@example.net"),
        ("Erin@example.net", "erin@example.net", "eRin@example.NET"),
        ("X@EXÄMPLE.NET", f"x@{IDN}", "x@exämple.net"),
        ("x@XN--EXMPLE-CUA.NET", f"x@{IDN}", "X@Exämple.net"),
    ],
)
def test_a_complaint_for_one_spelling_suppresses_the_mailbox(
    world: MailWorld, api: Api, reported: str, key: str, sent_to: str
) -> None:
    world.allow_recipients_at(IDN)
    world.configure()
    event = {
        "event_id": f"c-{reported}",
        "type": "complaint",
        "recipient": reported,
        "occurred_at": utcnow().isoformat(),
    }

    response = api().post(
        "/v1/mail/events", json={"events": [event]}, headers={"Authorization": f"Bearer {EVENTS_TOKEN}"}
    )

    assert response.json()["suppressed"] == [key]
    assert suppressions(world) == {(key, "*"): "complaint"}
    assert world.send(message(sent_to))[1] == "failed"
    assert world.sink.messages() == []


# --- Policy sees the mailbox ---------------------------------------------------------------------


def deny_world(world: MailWorld) -> None:
    with (world.policy_dir / "rules.csv").open("a") as rules:
        rules.write(
            f"\np, role:mailer, mail:{SUBDOMAIN}/**, send, allow\n"
            f"p, role:mailer, mail:{SUBDOMAIN}/*@{IDN}, send, deny\n"
            f"p, role:mailer, mail:{SUBDOMAIN}/ceo@example.net, send, deny\n"
        )
    world.configure()


@pytest.mark.parametrize(
    "recipient",
    [
        "x@exämple.net",
        "x@EXÄMPLE.NET",
        "x@XN--EXMPLE-CUA.NET",
        "x@ｅxämple.net",  # fullwidth e
        "x@exa\u0308mple.net",  # decomposed ä
        "ceo@example.net",
        "CEO@example.net",
        "Ceo@EXAMPLE.NET",
    ],
)
def test_a_deny_cannot_be_stepped_around_by_spelling_the_recipient_differently(
    world: MailWorld, recipient: str
) -> None:
    deny_world(world)

    action_id = world.submit(message(["ok@example.net", recipient]))

    action = load(world.rt, action_id)
    assert action.status == "denied"
    assert f"mail:{SUBDOMAIN}/ok@example.net" in {t["object"] for t in action.targets}
    assert world.run(action_id) is None  # a denied action is never claimed
    assert world.sink.messages() == []


@pytest.mark.parametrize(
    "recipient",
    ["ｃｅｏ@example.net", "c\u200beo@example.net", "ceo\u2060@example.net", "ceo@example.net\u202e"],
)
def test_a_recipient_no_key_can_describe_is_refused_at_submission_naming_it(
    world: MailWorld, api: Api, recipient: str
) -> None:
    deny_world(world)

    response = post_action(api(), world, message(["ok@example.net", recipient]))

    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["args.to[1]"]
    assert world.sink.messages() == []


def test_policy_objects_name_the_mailbox_not_the_spelling(world: MailWorld) -> None:
    deny_world(world)

    action_id = world.submit(message(["Ann@EXAMPLE.net", "bob@EXÄMPLE.NET"]))

    objects = [t["object"] for t in load(world.rt, action_id).targets]
    assert objects == [f"mail:{SUBDOMAIN}/ann@example.net", f"mail:{SUBDOMAIN}/bob@{IDN}"]
    assert load(world.rt, action_id).status == "denied"  # bob is at the denied domain


# --- From and Reply-To cannot pose as someone else ---------------------------------------------


@pytest.mark.parametrize(
    "sender",
    [
        f'"ceo@example.com" <agent@{SUBDOMAIN}>',
        f"ceo@example.com <agent@{SUBDOMAIN}>",
        f"CEO (ceo@example.com) <agent@{SUBDOMAIN}>",
        f'"ceo＠example.com" <agent@{SUBDOMAIN}>',
        f'"ceo﹫example.com" <agent@{SUBDOMAIN}>',
        f'"ceo [at] example.com" <agent@{SUBDOMAIN}>',
        f"=?utf-8?q?ceo=40example.com?= <agent@{SUBDOMAIN}>",
        {"address": f"agent@{SUBDOMAIN}", "name": "ceo@example.com"},
        {"address": f"agent@{SUBDOMAIN}", "name": "CEO\u202e moc.elpmaxe@oec"},
    ],
)
def test_a_from_display_name_that_looks_like_an_address_is_refused_with_a_hint(
    world: MailWorld, api: Api, sender: str | dict[str, str]
) -> None:
    world.configure()
    args = message()
    args["from"] = sender

    response = post_action(api(), world, args)

    assert response.status_code == 422
    body = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in body["errors"]] == ["args.from"]
    assert "display name" in body["errors"][0]["message"]
    assert "plain name" in body["hint"]
    assert world.sink.messages() == []


@pytest.mark.parametrize(
    "reply_to",
    ['"ceo@example.com" <help@example.net>', {"address": "help@example.net", "name": "ceo (at) example.com"}],
)
def test_a_reply_to_display_name_that_looks_like_an_address_is_refused(
    world: MailWorld, api: Api, reply_to: object
) -> None:
    world.configure()

    response = post_action(api(), world, message(reply_to=reply_to))

    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["args.reply_to"]


def test_a_plain_from_name_is_sent_as_written(world: MailWorld) -> None:
    world.configure()

    assert world.send(message(**{"from": f"Billing team <billing@{SUBDOMAIN}>"}))[1] == "succeeded"

    [delivered] = world.sink.messages()
    assert f"From: Billing team <billing@{SUBDOMAIN}>".encode() in delivered.content
