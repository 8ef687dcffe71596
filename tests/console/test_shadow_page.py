"""The console's Shadow page (/console/shadow): the shadow policy's disagreements for operators,
with the running shadow's version; approvers are refused, strangers sent to sign in; no inline
script or style (the console's CSP)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import col

from outbox.actions.models import Action
from outbox.api.app import create_app
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from outbox.users.models import Role
from outbox.users.service import add_user, set_password, sign_in
from tests.actions.test_shadow import SHADOW_DENY, shadow_of
from tests.console.test_operate import APPROVER, OPERATOR, PASSWORD, Session, text_of
from tests.support.agents import make_agent
from tests.support.calls import submit_call
from tests.support.dispatchers import RecordingDispatcher


@pytest.fixture
def backend() -> str:
    """SQLite only, as the other operator pages: the report's queries run on both backends in
    tests/policytools/test_shadow_report.py."""
    return "sqlite"


@dataclass
class ShadowConsole:
    runtime: Runtime
    client: TestClient
    ids: dict[str, str]

    def signed_in(self, email: str) -> Session:
        signed = sign_in(self.runtime, email, PASSWORD, "127.0.0.1")
        return Session(self.client, signed.session_token, signed.csrf_token)


def people(runtime: Runtime) -> None:
    for email, role in ((OPERATOR, Role.OPERATOR), (APPROVER, Role.APPROVER)):
        add_user(runtime.db, email, role=role, actor="test")
        set_password(runtime.db, email, PASSWORD, actor="test")


@pytest.fixture
def shadow_console(make_runtime: Callable[..., Runtime], policy_dir: Path, tmp_path: Path) -> Iterator[ShadowConsole]:
    runtime = make_runtime(RecordingDispatcher(), shadow_policy_dir=shadow_of(policy_dir, tmp_path / "shadow"))
    people(runtime)
    reader = make_agent(runtime.db, "reader-bot", ["http-reader"])

    def call(path: str) -> str:
        return submit_call(runtime, reader, "http.request", {"method": "GET", "url": f"http://127.0.0.1:9{path}"})

    ids = {"agrees": call("/orders/1"), "disagrees": call("/reports/q3"), "old": call("/reports/2019")}
    with runtime.db.session() as session:
        old = utcnow() - timedelta(days=30)
        session.execute(update(Action).where(col(Action.id) == ids["old"]).values(created_at=old))
    with TestClient(create_app(runtime.settings, runtime=runtime)) as client:
        yield ShadowConsole(runtime, client, ids)


def assert_csp_clean(page: str) -> None:
    assert re.search(r"<script(?![^>]*\bsrc=)", page) is None
    assert re.search(r"\sstyle=|\son[a-z]+=", page) is None


def test_operators_see_the_disagreements_of_the_last_week_with_both_outcomes(shadow_console: ShadowConsole) -> None:
    page = shadow_console.signed_in(OPERATOR).get("/console/shadow")

    assert page.status_code == 200
    text = text_of(page)
    assert "2 actions decided by the shadow policy" in text
    assert "1 disagree" in text
    assert shadow_console.ids["disagrees"] in text
    assert shadow_console.ids["agrees"] not in text
    assert shadow_console.ids["old"] not in text  # older than the default window
    assert "allow-to-deny" in text
    assert SHADOW_DENY in text
    assert shadow_console.runtime.shadow_policy.current.version in text  # type: ignore[union-attr]
    assert f'href="/console/actions/{shadow_console.ids["disagrees"]}"' in page.text
    assert 'href="/console/shadow" aria-current="page"' in page.text
    assert_csp_clean(page.text)


def test_the_window_is_chosen_with_since_and_until(shadow_console: ShadowConsole) -> None:
    operator = shadow_console.signed_in(OPERATOR)
    since = (utcnow() - timedelta(days=60)).date().isoformat()
    until = (utcnow() - timedelta(days=1)).date().isoformat()

    old_only = text_of(operator.get("/console/shadow", since=since, until=until))
    bad = operator.get("/console/shadow", since="last tuesday")

    assert shadow_console.ids["old"] in old_only
    assert shadow_console.ids["disagrees"] not in old_only
    assert bad.status_code == 200
    assert "since: 'last tuesday' is not a date or time" in text_of(bad)


def test_approvers_are_refused_and_not_shown_the_link_and_strangers_sign_in(shadow_console: ShadowConsole) -> None:
    approver = shadow_console.signed_in(APPROVER)

    refused = approver.get("/console/shadow")
    actions = approver.get("/console/actions")
    stranger = shadow_console.client.get("/console/shadow", follow_redirects=False)

    assert refused.status_code == 403
    assert shadow_console.ids["disagrees"] not in refused.text
    assert 'href="/console/shadow"' not in actions.text
    assert 'href="/console/shadow"' in shadow_console.signed_in(OPERATOR).get("/console/actions").text
    assert stranger.status_code == 303
    assert stranger.headers["location"].startswith("/console/sign-in?next=")


def test_without_a_shadow_policy_the_page_says_so(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(RecordingDispatcher())
    people(runtime)
    with TestClient(create_app(runtime.settings, runtime=runtime)) as client:
        signed = sign_in(runtime, OPERATOR, PASSWORD, "127.0.0.1")
        page = Session(client, signed.session_token, signed.csrf_token).get("/console/shadow")

    assert page.status_code == 200
    assert "This server runs no shadow policy" in text_of(page)
    assert "0 actions decided by the shadow policy" in text_of(page)
    assert_csp_clean(page.text)
