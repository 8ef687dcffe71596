"""Kill switches: pause all mail, one subdomain or one agent's mail at once; paused mail is
deferred and looked at again every `mail_pause_recheck_seconds`; nothing is lost; resume sends it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import col, select

from outbox.actions.models import Action
from outbox.audit.models import AuditEvent
from outbox.execution.sweeper import sweep_once
from outbox.sqltypes import utcnow
from tests.mail.world import SUBDOMAIN, MailCli, MailWorld, admin_headers, message
from tests.support.agents import make_agent
from tests.support.calls import load, submit_call


def make_due(world: MailWorld, action_id: str) -> None:
    with world.rt.db.session() as session:
        session.execute(update(Action).where(col(Action.id) == action_id).values(not_before=utcnow()))


def test_pausing_all_mail_defers_sends_and_resuming_delivers_them(world: MailWorld, cli: MailCli) -> None:
    world.configure(settings={"mail_pause_recheck_seconds": 30})
    cli.use(world.rt)
    paused = cli.printed(cli("mail", "pause", "--all", "--reason", "incident 42", "--as", "oncall"))
    assert paused.startswith("paused: all agent mail is paused by cli:oncall")

    before = utcnow()
    action_id, status = world.send()

    assert status == "deferred"
    action = load(world.rt, action_id)
    assert "all agent mail is paused by cli:oncall" in (action.status_reason or "")
    assert "incident 42" in (action.status_reason or "")
    assert action.not_before is not None
    assert timedelta(seconds=29) < action.not_before - before < timedelta(seconds=32)
    assert world.sink.messages() == []

    assert cli.printed(cli("mail", "resume", "--all")).startswith("resumed")
    make_due(world, action_id)
    sweep_once(world.rt)
    assert world.run(action_id) == "succeeded"
    assert len(world.sink.messages()) == 1


def test_pausing_one_agent_leaves_the_others_sending(world: MailWorld, cli: MailCli) -> None:
    world.configure()
    other = make_agent(world.rt.db, "calm-bot", ["mailer"])
    cli.use(world.rt)
    cli("mail", "pause", "--agent", "mailer-bot")

    held = world.send()[1]
    sent = world.run(submit_call(world.rt, other, "email.send", message("bob@example.net")))

    assert (held, sent) == ("deferred", "succeeded")
    assert cli("mail", "pause", "--agent", "no-such-bot", ok=False).exit_code == 1
    assert cli("mail", "pause", "--agent", "x", "--all", ok=False).exit_code == 2


def test_the_admin_api_pauses_and_resumes_a_subdomain_with_audit_events(
    world: MailWorld, api: Callable[[], TestClient]
) -> None:
    world.configure()
    client = api()
    headers = admin_headers()

    paused = client.post(
        "/v1/admin/mail/pause", json={"subdomain": SUBDOMAIN, "reason": "bad batch", "as": "ann"}, headers=headers
    )
    twice = client.post("/v1/admin/mail/pause", json={"subdomain": SUBDOMAIN}, headers=headers)
    neither = client.post("/v1/admin/mail/pause", json={"reason": "?"}, headers=headers)
    assert (paused.status_code, paused.json()["changed"], twice.json()["changed"], neither.status_code) == (
        200,
        True,
        False,
        422,
    )
    held = world.send()
    status = client.get("/v1/admin/mail", headers=headers).json()

    assert held[1] == "deferred"
    assert status["subdomains"][0]["sending"] == "paused"
    assert status["subdomains"][0]["pauses"][0]["reason"] == "bad batch"

    resumed = client.post(
        "/v1/admin/mail/resume", json={"subdomain": SUBDOMAIN, "as": "ann", "reason": "batch fixed"}, headers=headers
    )
    assert resumed.json()["changed"] is True
    make_due(world, held[0])
    sweep_once(world.rt)
    assert world.run(held[0]) == "succeeded"
    with world.rt.db.session() as session:
        kinds = [e.event_type for e in session.exec(select(AuditEvent)).all() if e.event_type.startswith("mail.")]
    assert kinds == ["mail.paused", "mail.resumed"]
    with world.rt.db.session() as session:
        resumed_event = session.exec(select(AuditEvent).where(AuditEvent.event_type == "mail.resumed")).one()
    assert json.loads(resumed_event.data_json)["reason"] == "batch fixed"


def test_mail_paused_past_its_expiry_fails_with_the_reason(world: MailWorld, cli: MailCli) -> None:
    world.configure(settings={"mail_max_deferral_hours": 0.001})
    cli.use(world.rt)
    cli("mail", "pause", "--subdomain", SUBDOMAIN, "--reason", "reputation review")

    action_id, status = world.send()

    assert status == "failed"
    reason = load(world.rt, action_id).status_reason or ""
    assert "reputation review" in reason and "after its expiry" in reason
