"""The suppression list: checked before every send, managed through the CLI and the admin API."""

from __future__ import annotations

import json
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlmodel import col, select

from outbox.mail.models import MailDelivery
from tests.mail.world import OTHER, SUBDOMAIN, MailCli, MailWorld, admin_headers, message, subdomain_config
from tests.support.calls import load


def test_a_suppressed_recipient_is_left_out_and_the_others_still_get_the_message(
    world: MailWorld, cli: MailCli
) -> None:
    world.configure()
    cli.use(world.rt)
    cli("mail", "suppression", "add", "Gone@Example.net", "--detail", "asked by phone", "--as", "ops@example.com")

    action_id, status = world.send(message(["gone@example.net", "ann@example.net"]))

    assert status == "succeeded"
    [delivered] = world.sink.messages()
    assert delivered.recipients == ("ann@example.net",)
    response = load(world.rt, action_id).response or {}
    assert response["recipients"]["gone@example.net"]["stage"] == "suppressed"
    assert "suppressed (manual" in response["recipients"]["gone@example.net"]["message"]


def test_each_recipient_row_records_its_own_answer_and_only_sent_ones_are_charged(
    world: MailWorld, cli: MailCli
) -> None:
    world.configure()
    cli.use(world.rt)
    cli("mail", "suppression", "add", "gone@example.net")

    action_id, status = world.send(message(["gone@example.net", "ann@example.net", "bob@example.net"]))

    assert status == "succeeded"
    with world.rt.db.session() as session:
        rows = session.exec(select(MailDelivery).where(col(MailDelivery.action_id) == action_id)).all()
        recorded = {r.recipient: (r.outcome, r.attempts, r.stage, r.charged_at is not None) for r in rows}
    assert recorded == {
        "gone@example.net": ("suppressed", 1, "suppressed", False),
        "ann@example.net": ("delivered", 1, "data", True),
        "bob@example.net": ("delivered", 1, "data", True),
    }


def test_a_message_whose_every_recipient_is_suppressed_fails_and_is_not_sent(world: MailWorld, cli: MailCli) -> None:
    world.configure()
    cli.use(world.rt)
    cli("mail", "suppression", "add", "ann@example.net")

    action_id, status = world.send(message("ann@example.net"))

    assert status == "failed"
    assert "every recipient refused" in (load(world.rt, action_id).status_reason or "")
    assert world.sink.messages() == []


def test_a_subdomain_scoped_suppression_stops_only_that_subdomain(world: MailWorld, cli: MailCli) -> None:
    world.configure(
        subdomain_config(SUBDOMAIN, world.key_file, world.sink.port),
        subdomain_config(
            OTHER, world.key_file, world.sink.port, dkim={"selector": "sel2026", "key_file": str(world.key_file)}
        ),
    )
    with (world.policy_dir / "rules.csv").open("a") as rules:
        rules.write(f"\np, role:mailer, mail:{OTHER}/**, send, allow\n")
    world.runtime = world.build_runtime()
    cli.use(world.rt)
    cli("mail", "suppression", "add", "ann@example.net", "--subdomain", SUBDOMAIN)

    held = world.send(message("ann@example.net"))[1]
    other = world.send(message("ann@example.net", **{"from": f"news@{OTHER}"}))[1]

    assert (held, other) == ("failed", "succeeded")


def test_the_cli_lists_and_removes_suppressions(world: MailWorld, cli: MailCli) -> None:
    world.configure()
    cli.use(world.rt)
    cli("mail", "suppression", "add", "a@example.net")
    cli("mail", "suppression", "add", "b@example.net", "--reason", "complaint", "--subdomain", SUBDOMAIN)

    listed = json.loads(cli.printed(cli("mail", "suppression", "list", "--json")))
    table = cli.printed(cli("mail", "suppression", "list"))
    removed = cli.printed(cli("mail", "suppression", "remove", "a@example.net"))
    missing = cli("mail", "suppression", "remove", "a@example.net", ok=False)

    assert {(i["recipient"], i["scope"], i["reason"]) for i in listed["items"]} == {
        ("a@example.net", "*", "manual"),
        ("b@example.net", SUBDOMAIN, "complaint"),
    }
    assert "b@example.net" in table and SUBDOMAIN in table
    assert removed == "removed: a@example.net (*, manual)"
    assert missing.exit_code == 1
    assert world.send(message("a@example.net"))[1] == "succeeded"


def test_the_admin_api_adds_lists_and_removes_suppressions(world: MailWorld, api: Callable[[], TestClient]) -> None:
    world.configure()
    client = api()
    headers = admin_headers()

    assert client.get("/v1/admin/mail/suppressions").status_code == 401
    added = client.post("/v1/admin/mail/suppressions", json={"recipient": "Ann@example.net"}, headers=headers)
    again = client.post("/v1/admin/mail/suppressions", json={"recipient": "ann@example.net"}, headers=headers)
    bad = client.post("/v1/admin/mail/suppressions", json={"recipient": "not an address"}, headers=headers)
    unknown = client.post(
        "/v1/admin/mail/suppressions",
        json={"recipient": "x@example.net", "subdomain": "nope.example.com"},
        headers=headers,
    )
    listed = client.get("/v1/admin/mail/suppressions", headers=headers).json()

    assert (added.status_code, again.status_code, bad.status_code, unknown.status_code) == (201, 200, 422, 422)
    assert added.json()["recipient"] == "ann@example.net"
    assert [i["recipient"] for i in listed["items"]] == ["ann@example.net"]
    assert listed["counts"] == {"manual": 1}
    assert world.send(message("ann@example.net"))[1] == "failed"

    removed = client.delete("/v1/admin/mail/suppressions/ann@example.net", headers=headers)
    gone = client.delete("/v1/admin/mail/suppressions/ann@example.net", headers=headers)
    assert (removed.status_code, gone.status_code) == (200, 404)
    assert world.send(message("ann@example.net", subject="Again"))[1] == "succeeded"
