"""RFC 8058 one-click unsubscribe, end to end: bulk mail delivered to the sink carries a signed
link; POSTing it (no login, no redirect) suppresses the recipient at once, for the subdomain that
mailed them; the next bulk mail to them is not sent. Opening the link (GET) changes nothing."""

from __future__ import annotations

import email
import re
from collections.abc import Callable
from email import policy
from urllib.parse import urlsplit

from fastapi.testclient import TestClient
from sqlmodel import select

from outbox.approvals.service import decide
from outbox.mail.models import MailSuppression
from tests.mail.world import SUBDOMAIN, MailWorld, message
from tests.support.agents import make_agent
from tests.support.calls import load, submit_call

BULK_RULE = "\np, role:bulk-mailer, mail:agents.mail.example.com/**, send|bulk, allow\n"


def bulk_world(world: MailWorld) -> str:
    """Configure the world and return the key of an agent whose role may send bulk mail."""
    with (world.policy_dir / "rules.csv").open("a") as rules:
        rules.write(BULK_RULE)
    world.configure()
    return make_agent(world.rt.db, "newsletter-bot", ["bulk-mailer"])


def unsubscribe_path(raw: bytes) -> str:
    parsed = email.message_from_bytes(raw, policy=policy.SMTP)
    header = str(parsed["List-Unsubscribe"])
    url = re.search(r"<(https?://[^>]+)>", header)
    assert url is not None, header
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    return urlsplit(url.group(1)).path


def test_bulk_mail_needs_approval_for_a_plain_mailer(world: MailWorld) -> None:
    world.configure()

    action_id = world.submit(message(category="bulk"))

    assert load(world.rt, action_id).status == "awaiting_approval"
    targets = {(t["object"], t["act"]) for t in load(world.rt, action_id).targets}
    assert targets == {(f"mail:{SUBDOMAIN}/ann@example.net", "send"), (f"mail:{SUBDOMAIN}/ann@example.net", "bulk")}


def test_approved_bulk_mail_is_sent_with_its_unsubscribe_headers(world: MailWorld) -> None:
    world.configure()
    action_id = world.submit(message(category="bulk"))

    decide(world.rt, action_id, "user:lead@example.com", "approve", via="cli")

    assert load(world.rt, action_id).status == "queued"
    assert world.run(action_id) == "succeeded"
    assert unsubscribe_path(world.sink.messages()[0].content).startswith("/unsubscribe/v1.")


def test_one_click_post_suppresses_at_once_without_redirect_and_is_idempotent(
    world: MailWorld, api: Callable[[], TestClient]
) -> None:
    key = bulk_world(world)
    first = submit_call(world.rt, key, "email.send", message("Ann@Example.net", category="bulk"))
    assert world.run(first) == "succeeded"
    path = unsubscribe_path(world.sink.messages()[0].content)
    client = api()

    opened = client.get(path)
    assert opened.status_code == 200
    assert '<form method="post">' in opened.text
    with world.rt.db.session() as session:
        assert session.exec(select(MailSuppression)).all() == []  # opening the link changed nothing

    answer = client.post(path, data={"List-Unsubscribe": "One-Click"}, follow_redirects=False)
    again = client.post(path, data={"List-Unsubscribe": "One-Click"}, follow_redirects=False)

    assert (answer.status_code, again.status_code) == (200, 200)
    assert "location" not in answer.headers
    with world.rt.db.session() as session:
        [row] = session.exec(select(MailSuppression)).all()
    assert (row.recipient, row.scope, row.reason, row.source) == (
        "ann@example.net",
        SUBDOMAIN,
        "unsubscribe",
        "one-click",
    )

    second = submit_call(world.rt, key, "email.send", message("Ann@Example.net", category="bulk", subject="More"))
    assert world.run(second) == "failed"
    assert "suppressed (unsubscribe" in (load(world.rt, second).status_reason or "")
    assert len(world.sink.messages()) == 1


def test_a_tampered_token_is_refused(world: MailWorld, api: Callable[[], TestClient]) -> None:
    key = bulk_world(world)
    world.run(submit_call(world.rt, key, "email.send", message(category="bulk")))
    path = unsubscribe_path(world.sink.messages()[0].content)
    client = api()
    tampered = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")

    assert client.post(tampered).status_code == 400
    assert client.get(tampered).status_code == 400
    with world.rt.db.session() as session:
        assert session.exec(select(MailSuppression)).all() == []
