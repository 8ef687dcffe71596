"""The operators' pages (/console/actions, /mail, /audit, /policy) against the real app on SQLite:
sign-in required, operator-only changes refused for approvers, filters, timelines, the mail
charts with their numbers, the kill switch stopping sends, the audit export, the policy version.

The pipeline is the real one (policy, submission, the mail gate, a real SMTP sink); people are
signed in through `outbox.users.service.sign_in` and carry its session cookie and CSRF token.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response  # what starlette's TestClient answers with
from pydantic import SecretStr
from sqlalchemy import update
from sqlmodel import col, select

from outbox.actions.models import Action
from outbox.api.app import create_app
from outbox.audit.models import AuditEvent
from outbox.console.deps import SESSION_COOKIE
from outbox.console.operate.charts import Column, Rate, column_chart, rate_chart
from outbox.execution.service import run_action
from outbox.execution.sweeper import sweep_once
from outbox.mail.sending.dkim_signing import generate_key, write_private_key
from outbox.mail.sending.sink import MaildirSink
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from outbox.users.models import Role
from outbox.users.service import add_user, set_password, sign_in
from tests.mail.world import SUBDOMAIN, message, subdomain_config, write_mail_yaml
from tests.support.agents import make_agent
from tests.support.calls import load, submit_call
from tests.support.dispatchers import RecordingDispatcher

OPERATOR = "ops@example.com"
APPROVER = "lead@example.com"
PASSWORD = "correct horse battery staple"
PAGES = ("/console/actions", "/console/actions/act_missing", "/console/mail", "/console/audit", "/console/policy")


@pytest.fixture
def backend() -> str:
    """SQLite only: these tests are about the pages; the queries are plain and portable."""
    return "sqlite"


@dataclass
class Console:
    runtime: Runtime
    client: TestClient
    sink: MaildirSink
    mailer_key: str

    def signed_in(self, email: str) -> Session:
        signed = sign_in(self.runtime, email, PASSWORD, "127.0.0.1")
        return Session(self.client, signed.session_token, signed.csrf_token)

    def send(self, **overrides: str) -> str:
        return submit_call(self.runtime, self.mailer_key, "email.send", message(**overrides))

    def run(self, action_id: str) -> str | None:
        return run_action(self.runtime, action_id)

    def events(self, prefix: str) -> list[AuditEvent]:
        with self.runtime.db.session() as session:
            rows = session.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all()
        return [e for e in rows if e.event_type.startswith(prefix)]


@dataclass
class Session:
    client: TestClient
    token: str
    csrf: str

    def get(self, path: str, **params: str) -> Response:
        return self.client.get(path, params=params, headers=self.cookie, follow_redirects=False)

    def post(self, path: str, fields: dict[str, str], *, csrf: str | None = None) -> Response:
        body = {"csrf_token": self.csrf if csrf is None else csrf, **fields}
        return self.client.post(path, data=body, headers=self.cookie, follow_redirects=False)

    @property
    def cookie(self) -> dict[str, str]:
        # Sent as a header: the client's cookie jar stays empty, so sessions never mix.
        return {"Cookie": f"{SESSION_COOKIE}={self.token}"}


@pytest.fixture
def console(make_runtime: Callable[..., Runtime], policy_dir: Path, tmp_path: Path) -> Iterator[Console]:
    key = generate_key("rsa-sha256")
    key_file = tmp_path / "dkim.key"
    write_private_key(key_file, key)
    sink = MaildirSink(tmp_path / "maildir").start()
    write_mail_yaml(policy_dir, [subdomain_config(SUBDOMAIN, key_file, sink.port)])
    runtime = make_runtime(
        RecordingDispatcher(),
        unsubscribe_secret=SecretStr("operate-unsubscribe-secret-0123456789abcdef"),
        mail_pause_recheck_seconds=30,
    )
    for email, role in ((OPERATOR, Role.OPERATOR), (APPROVER, Role.APPROVER)):
        add_user(runtime.db, email, role=role, actor="test")
        set_password(runtime.db, email, PASSWORD, actor="test")
    mailer_key = make_agent(runtime.db, "mailer-bot", ["mailer"])
    try:
        with TestClient(create_app(runtime.settings, runtime=runtime)) as client:
            yield Console(runtime, client, sink, mailer_key)
    finally:
        sink.stop()


def text_of(response: Response) -> str:
    """The page's text with tags removed and whitespace collapsed, as a reader sees it."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.text)))


# --- Sign-in and roles ---------------------------------------------------------------------


def test_every_page_sends_a_stranger_to_sign_in(console: Console) -> None:
    for path in (*PAGES, "/console/audit/export"):
        response = console.client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/console/sign-in?next="), path
    for path in ("/console/mail/pause", "/console/mail/resume", "/console/audit/verify"):
        response = console.client.post(path, data={"reason": "x"}, follow_redirects=False)
        assert response.status_code == 303, path
    assert console.events("mail.") == []


def test_an_approver_reads_the_pages_but_may_not_pause_verify_or_export(console: Console) -> None:
    approver = console.signed_in(APPROVER)

    assert [approver.get(path).status_code for path in PAGES] == [200, 404, 200, 200, 200]
    mail = approver.get("/console/mail")
    assert "Pausing and resuming mail is for operators." in mail.text
    assert 'action="/console/mail/pause"' not in mail.text
    assert 'action="/console/audit/verify"' not in approver.get("/console/audit").text

    paused = approver.post("/console/mail/pause", {"subdomain": SUBDOMAIN, "reason": "I am not an operator"})
    verified = approver.post("/console/audit/verify", {})
    exported = approver.get("/console/audit/export")
    assert (paused.status_code, verified.status_code, exported.status_code) == (403, 403, 403)
    assert "Operators only" in paused.text
    assert console.events("mail.") == []
    assert console.run(console.send()) == "succeeded"


# --- Actions -------------------------------------------------------------------------------


def test_the_actions_list_filters_by_agent_tool_status_person_and_time(console: Console) -> None:
    outsider_key = make_agent(console.runtime.db, "outsider-bot", [])
    sent = submit_call(console.runtime, console.mailer_key, "email.send", message())
    assert console.run(sent) == "succeeded"
    denied = submit_call(console.runtime, outsider_key, "email.send", message())
    for_ada = console.send(subject="For Ada")
    with console.runtime.db.session() as session:
        session.execute(update(Action).where(col(Action.id) == for_ada).values(on_behalf_of="user:ada@example.com"))
    operator = console.signed_in(OPERATOR)

    def listed(**params: str) -> set[str]:
        response = operator.get("/console/actions", **params)
        assert response.status_code == 200
        return set(re.findall(r'href="/console/actions/(act_[^"]+)"', response.text))

    everything = {sent, denied, for_ada}
    assert listed() == everything
    assert listed(agent="outsider-bot") == {denied}
    assert listed(status="denied") == {denied}
    assert listed(status="succeeded", tool="email.send") == {sent}
    assert listed(person="Ada@Example.com") == {for_ada}
    today = utcnow().date()
    assert listed(**{"from": today.isoformat()}) == everything
    assert listed(**{"from": (today + timedelta(days=1)).isoformat()}) == set()
    assert listed(**{"to": today.isoformat()}) == set()

    refused = operator.get("/console/actions", status="exploded", **{"from": "yesterday"})
    assert refused.status_code == 200
    assert "status: 'exploded' is not a status" in text_of(refused)
    assert "from: 'yesterday' is not a date or time" in text_of(refused)


def test_the_actions_list_pages_newest_first(console: Console) -> None:
    ids = [console.send(subject=f"Report {n}") for n in range(53)]
    operator = console.signed_in(OPERATOR)

    first = operator.get("/console/actions")
    on_first = re.findall(r'href="/console/actions/(act_[^"]+)"', first.text)
    next_link = re.search(r'href="(/console/actions\?cursor=[^"]+)" rel="next"', first.text)
    assert next_link is not None
    second = console.client.get(next_link.group(1).replace("&amp;", "&"), headers=operator.cookie)
    on_second = re.findall(r'href="/console/actions/(act_[^"]+)"', second.text)

    assert len(on_first) == 50
    assert len(on_second) == 3
    assert set(on_first) | set(on_second) == set(ids)
    assert 'rel="next"' not in second.text
    assert "cursor: not a page of this list" in operator.get("/console/actions", cursor="garbage!").text
    # Hand-made cursors and times are read, or named as unreadable, never a server error.
    naive = base64.urlsafe_b64encode(b"2999-01-01T00:00:00|act_zzz").decode()
    assert len(re.findall(r'href="/console/actions/act_', operator.get("/console/actions", cursor=naive).text)) == 50
    beyond = operator.get("/console/actions", **{"from": "9999-12-31T23:59:00-14:00"})
    assert beyond.status_code == 200
    assert "is not a date or time" in text_of(beyond)


def test_an_actions_page_shows_its_timeline_and_what_was_recorded_escaped(console: Console) -> None:
    action_id = console.send(subject="<script>alert('subject')</script>", text="x" * 30_000)
    assert console.run(action_id) == "succeeded"
    operator = console.signed_in(OPERATOR)

    page = operator.get(f"/console/actions/{action_id}")

    assert page.status_code == 200
    text = text_of(page)
    for event_type in ("action.received", "action.queued", "action.running", "action.succeeded"):
        assert event_type in text
    assert "received" in text and "queued → running" in text and "running → succeeded" in text
    assert "by policy" in text and "mailer-bot" in text
    assert "Artifact (what was executed)" in text and "Tool response" in text
    assert "250" in page.text  # the sink's SMTP reply, as recorded
    assert "The message as sent" in text and "DKIM-Signature:" in text
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert" in page.text
    assert "Shown: the first" in text  # the 30 000-character body is cut, and says so
    assert operator.get("/console/actions/act_nope").status_code == 404


# --- Mail ----------------------------------------------------------------------------------


def test_the_mail_page_draws_the_send_counters_and_breaker_as_svg_with_the_numbers(console: Console) -> None:
    for _ in range(3):
        assert console.run(console.send()) == "succeeded"
    operator = console.signed_in(OPERATOR)

    page = operator.get("/console/mail")

    assert page.status_code == 200
    assert page.text.count('role="img"') == 3  # per hour, per day, breaker rates
    assert f"Sends per hour from {SUBDOMAIN}, last 24 hours (UTC)</title>" in page.text
    assert "3 recipients charged in the last 24 hours; the hourly cap is 1000" in page.text
    assert "3 recipients charged in 14 days against a daily cap of 10000 today" in page.text
    assert "Bounce rate 0.00% (threshold 4.00%)" in page.text
    now_hour = f"{utcnow():%H}:00"
    assert re.search(rf"<td>{now_hour}</td><td>3</td><td>1000</td>", page.text)
    assert f"hourly cap of {SUBDOMAIN} 3 of 1000" in text_of(page)
    assert "<style" not in page.text and "style=" not in page.text and "<script>" not in page.text


def test_a_pause_with_a_reason_stops_sends_until_resumed(console: Console) -> None:
    operator = console.signed_in(OPERATOR)

    unexplained = operator.post("/console/mail/pause", {"subdomain": SUBDOMAIN, "reason": "  "})
    forged = operator.post("/console/mail/pause", {"subdomain": SUBDOMAIN, "reason": "x"}, csrf="not-the-token")
    assert (unexplained.status_code, forged.status_code) == (422, 403)
    assert console.events("mail.") == []

    paused = operator.post("/console/mail/pause", {"subdomain": SUBDOMAIN, "reason": "incident 42"})
    assert paused.status_code == 200
    assert f"mail from {SUBDOMAIN} is paused by user:{OPERATOR}" in paused.text
    assert "incident 42" in paused.text
    assert 'action="/console/mail/resume"' in paused.text
    [event] = console.events("mail.paused")
    assert event.actor == f"user:{OPERATOR}"
    assert json.loads(event.data_json)["reason"] == "incident 42"

    held = console.send()
    assert console.run(held) == "deferred"
    assert "incident 42" in (load(console.runtime, held).status_reason or "")
    assert console.sink.messages() == []

    resumed = operator.post("/console/mail/resume", {"subdomain": SUBDOMAIN, "reason": "incident 42 closed"})
    assert resumed.status_code == 200
    assert "resumed" in resumed.text
    events = console.events("mail.resumed")
    assert [e.actor for e in events] == [f"user:{OPERATOR}"]
    assert json.loads(events[0].data_json)["reason"] == "incident 42 closed"
    with console.runtime.db.session() as session:
        session.execute(update(Action).where(col(Action.id) == held).values(not_before=utcnow()))
    sweep_once(console.runtime)  # what the sweeper does when not_before comes: back to queued
    assert console.run(held) == "succeeded"
    assert len(console.sink.messages()) == 1


def test_pausing_an_unknown_subdomain_says_which_ones_exist(console: Console) -> None:
    operator = console.signed_in(OPERATOR)

    refused = operator.post("/console/mail/pause", {"subdomain": "nope.example.com", "reason": "typo"})

    assert refused.status_code == 422
    assert f"configured: {SUBDOMAIN}" in refused.text
    assert console.events("mail.") == []


# --- Audit ---------------------------------------------------------------------------------


def test_the_audit_export_downloads_the_chain_as_json_lines(console: Console) -> None:
    action_id = console.send()
    assert console.run(action_id) == "succeeded"
    operator = console.signed_in(OPERATOR)

    export = operator.get("/console/audit/export")

    assert export.status_code == 200
    assert export.headers["content-type"].startswith("application/x-ndjson")
    assert export.headers["content-disposition"].startswith('attachment; filename="outbox-audit-')
    records = [json.loads(line) for line in export.text.splitlines()]
    assert records[0]["record"] == "header"
    assert records[-1] == {"record": "end", "events": len(records) - 2, "actions": 1}
    lines = records[1:-1]
    assert [line["seq"] for line in lines] == list(range(1, len(lines) + 1))
    mine = [line for line in lines if line["action_id"] == action_id]
    assert [line["type"] for line in mine] == ["action.received", "action.queued", "action.running", "action.succeeded"]
    assert mine[0]["action"]["tool"] == "email.send"

    tomorrow = (utcnow() + timedelta(days=1)).date().isoformat()
    later = [json.loads(line) for line in operator.get("/console/audit/export", since=tomorrow).text.splitlines()]
    assert [line["record"] for line in later] == ["header", "end"]
    assert operator.get("/console/audit/export", since="last week").status_code == 400


def test_the_audit_page_shows_the_chain_and_verifies_on_request(console: Console) -> None:
    assert console.run(console.send()) == "succeeded"
    operator = console.signed_in(OPERATOR)

    status = text_of(operator.get("/console/audit"))
    assert "Sealed events" in status and "Not sealed yet" in status and "Latest checkpoint none yet" in status

    verified = operator.post("/console/audit/verify", {})

    assert verified.status_code == 200
    text = text_of(verified)
    assert "passed" in text and "Chain intact" in text
    assert "Chain, checkpoints and action rows agree." in text


# --- Policy --------------------------------------------------------------------------------


def test_the_policy_page_shows_the_running_version_and_versions_other_replicas_decided_with(console: Console) -> None:
    running = console.runtime.policy.current.version
    operator = console.signed_in(OPERATOR)
    first = console.send()
    agreed = text_of(operator.get("/console/policy"))
    assert running in agreed
    assert "Every action since" in agreed and "Skew" not in agreed

    # Another replica, still on an older version, decided an action.
    other = console.send(subject="decided elsewhere")
    with console.runtime.db.session() as session:
        session.execute(update(Action).where(col(Action.id) == other).values(policy_version="sha256:older"))

    skewed = text_of(operator.get("/console/policy"))

    assert "Skew: 1 other version decided actions" in skewed
    assert "sha256:older" in skewed and "not this server's" in skewed
    assert first != other


# --- Charts --------------------------------------------------------------------------------


def test_a_column_over_its_cap_is_marked_and_each_column_carries_the_cap_of_its_day() -> None:
    ramp = [Column("12-01", 40, 50), Column("12-02", 70, 65), Column("12-03", 0, 84)]

    chart = column_chart("daily-x", "Sends per day", "three days of a ramp", ramp)

    assert [c.over for c in chart.columns] == [False, True, False]
    levels = [c.limit_y or 0.0 for c in chart.columns]
    assert None not in [c.limit_y for c in chart.columns]
    assert levels[0] > levels[1] > levels[2]  # a rising cap is drawn higher (SVG y grows down)
    assert chart.ticks[-1].value == 100  # the axis ends on a round number above every value and cap
    assert chart.columns[2].height == 0
    assert chart.total == 110


def test_a_rate_at_its_threshold_is_over_and_the_marker_stays_inside_the_chart() -> None:
    chart = rate_chart(
        "rates-x", "Rates", "bounces and complaints", [Rate("Bounces", 0.04, 0.04), Rate("Complaints", 0.0, 0.001)]
    )

    bounces, complaints = chart.rows
    assert (bounces.over, complaints.over) == (True, False)
    assert complaints.width == 0
    assert all(chart.left < row.threshold_x < chart.width for row in chart.rows)
