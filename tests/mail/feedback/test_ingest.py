"""Feedback after delivery: provider events and raw DSNs suppress hard bounces and complaints,
are ingested once per event id, and count towards the subdomain's circuit breaker, which pauses
the subdomain (with an audit event) until an admin resumes it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import col, select

from outbox.api.app import create_app
from outbox.audit.models import AuditEvent
from outbox.mail.models import MailFeedbackEvent, MailPause, MailSuppression
from outbox.mail.sending.message import message_id_for
from outbox.mail.sending.sink import SinkScript
from tests.mail.feedback.test_dsn import POSTFIX_DSN
from tests.mail.world import (
    EVENTS_TOKEN,
    SUBDOMAIN,
    MailCli,
    MailWorld,
    admin_headers,
    bounce_dsn,
    message,
)
from tests.support.calls import load

EVENTS = {"Authorization": f"Bearer {EVENTS_TOKEN}"}


def event(event_id: str, recipient: str, type_: str = "bounce", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": event_id,
        "type": type_,
        "recipient": recipient,
        "occurred_at": datetime.now(UTC).isoformat(),
        **fields,
    }
    if type_ == "bounce":
        body.setdefault("kind", "hard")
    return body


def suppressions(world: MailWorld) -> dict[tuple[str, str], str]:
    with world.rt.db.session() as session:
        return {(s.recipient, s.scope): s.reason for s in session.exec(select(MailSuppression)).all()}


def audit_types(world: MailWorld, prefix: str = "mail.") -> list[str]:
    with world.rt.db.session() as session:
        rows = session.exec(select(AuditEvent.event_type).order_by(col(AuditEvent.id))).all()
    return [t for t in rows if t.startswith(prefix)]


def test_the_events_webhook_needs_its_token(world: MailWorld, api: Callable[[], TestClient]) -> None:
    world.configure()
    client = api()
    body = {"events": [event("e1", "ann@example.net")]}

    assert client.post("/v1/mail/events", json=body).status_code == 401
    assert client.post("/v1/mail/events", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    world.runtime = world.build_runtime(mail_events_token=None)
    with TestClient(create_app(runtime=world.rt)) as unconfigured:
        answer = unconfigured.post("/v1/mail/events", json=body, headers=EVENTS)
    assert answer.status_code == 503
    assert answer.json()["type"].endswith("/mail-events-disabled")


def test_hard_bounces_and_complaints_suppress_soft_bounces_do_not_and_redelivery_is_harmless(
    world: MailWorld, api: Callable[[], TestClient]
) -> None:
    world.configure()
    client = api()
    body = {
        "events": [
            event("e1", "Gone@Example.NET", sender_domain=SUBDOMAIN),
            event("e2", "angry@example.net", "complaint", feedback_type="abuse"),
            event("e3", "full@example.net", kind="soft", status="4.2.2"),
            event("e4", "bye@example.net", "unsubscribe", sender_domain=SUBDOMAIN),
        ]
    }

    first = client.post("/v1/mail/events", json=body, headers=EVENTS)
    again = client.post("/v1/mail/events", json=body, headers=EVENTS)

    assert first.status_code == 200, first.text
    assert first.json()["accepted"] == 4
    assert sorted(first.json()["suppressed"]) == ["angry@example.net", "bye@example.net", "gone@example.net"]
    assert again.json() == {**again.json(), "accepted": 0, "duplicates": 4, "suppressed": []}
    assert suppressions(world) == {
        ("gone@example.net", "*"): "hard_bounce",
        ("angry@example.net", "*"): "complaint",
        ("bye@example.net", SUBDOMAIN): "unsubscribe",
    }
    assert audit_types(world).count("mail.suppressed") == 3


def test_an_invalid_event_is_a_422_naming_the_field(world: MailWorld, api: Callable[[], TestClient]) -> None:
    world.configure()
    answer = api().post("/v1/mail/events", json={"events": [{"event_id": "x", "type": "bounce"}]}, headers=EVENTS)

    assert answer.status_code == 422
    fields = {e["field"] for e in answer.json()["errors"]}
    assert any("recipient" in f for f in fields)


def test_a_raw_dsn_is_parsed_attributed_to_our_message_and_suppresses_the_hard_bounce(
    world: MailWorld, api: Callable[[], TestClient]
) -> None:
    world.configure()
    action_id, _ = world.send(message("nobody@example.net"))
    raw = bounce_dsn("nobody@example.net", message_id_for(action_id, SUBDOMAIN))

    answer = api().post("/v1/mail/dsn", content=raw, headers={**EVENTS, "Content-Type": "message/rfc822"})

    assert answer.status_code == 200, answer.text
    assert answer.json()["suppressed"] == ["nobody@example.net"]
    with world.rt.db.session() as session:
        stored = session.exec(select(MailFeedbackEvent)).one()
    assert (stored.kind, stored.subdomain, stored.action_id) == ("hard_bounce", SUBDOMAIN, action_id)
    wrong_type = api().post("/v1/mail/dsn", content=raw, headers={**EVENTS, "Content-Type": "text/plain"})
    assert wrong_type.status_code == 415


def test_a_postfix_dsn_through_the_cli_suppresses_only_the_permanent_failure(
    world: MailWorld, cli: MailCli, tmp_path: Path
) -> None:
    world.configure()
    cli.use(world.rt)
    dsn = tmp_path / "bounce.eml"
    dsn.write_bytes(POSTFIX_DSN)

    result = cli("mail", "ingest-dsn", str(dsn))
    again = cli("mail", "ingest-dsn", str(dsn))

    assert '"accepted": 2' in cli.printed(result)
    assert '"duplicates": 2' in cli.printed(again)
    assert suppressions(world) == {("nobody@example.net", "*"): "hard_bounce"}


def test_a_burst_of_bounces_trips_the_breaker_which_pauses_the_subdomain_until_an_admin_resumes(
    world: MailWorld, api: Callable[[], TestClient]
) -> None:
    world.configure()  # minimum sample 20, pause at 4 % bounces
    sent = [world.send(message(f"r{n}@example.net"))[0] for n in range(30)]
    client = api()
    # The DSNs come in as a burst: 1 bounce in 30 is 3.3 %, under the threshold; 2 are 6.7 %.
    tripped = []
    for n, action_id in enumerate(sent[:3]):
        raw = bounce_dsn(f"r{n}@example.net", message_id_for(action_id, SUBDOMAIN))
        answer = client.post("/v1/mail/dsn", content=raw, headers={**EVENTS, "Content-Type": "message/rfc822"})
        assert answer.status_code == 200
        tripped.append(answer.json()["breakers_tripped"])

    assert tripped == [[], [SUBDOMAIN], []]  # tripped once, by the second bounce
    with world.rt.db.session() as session:
        pause = session.get(MailPause, ("subdomain", SUBDOMAIN))
    assert pause is not None and pause.cause == "breaker"
    assert "bounce rate" in pause.reason
    assert audit_types(world).count("mail.breaker_tripped") == 1

    held, status = world.send(message("next@example.net"))
    assert status == "deferred"
    assert "paused by its circuit breaker" in (load(world.rt, held).status_reason or "")
    status_body = client.get("/v1/admin/mail", headers=admin_headers()).json()
    [sub] = status_body["subdomains"]
    assert (sub["sending"], sub["breaker"]["tripped"], sub["breaker"]["bounces"]) == ("paused", True, 3)

    resumed = client.post(
        "/v1/admin/mail/resume", json={"subdomain": SUBDOMAIN, "as": "oncall"}, headers=admin_headers()
    )
    assert resumed.json()["changed"] is True
    assert "mail.resumed" in audit_types(world)
    _, status = world.send(message("after@example.net"))
    assert status == "succeeded"  # the count restarted at the resume: no immediate re-trip


def test_smtp_refusals_count_as_bounces_for_the_breaker(world: MailWorld) -> None:
    world.configure(breaker={"bounce_rate": 0.1, "complaint_rate": 0.001, "window_hours": 1, "minimum_sample": 10})
    world.sink.set_script(SinkScript(rcpt={f"bad{n}@example.net": 550 for n in range(2)}))
    for n in range(8):
        world.send(message(f"good{n}@example.net"))
    assert world.send(message("bad0@example.net"))[1] == "failed"
    assert audit_types(world).count("mail.breaker_tripped") == 0  # 9 answered: under the minimum sample

    assert world.send(message("bad1@example.net"))[1] == "failed"

    assert audit_types(world).count("mail.breaker_tripped") == 1  # 2 of 10 refused: 20 % >= 10 %
