"""Fixtures for the console's fast page tests (TestClient over the real app, on SQLite and
PostgreSQL). Nothing here is autouse, so the browser tests under e2e/ are unaffected.

- `console_runtime`: a runtime on the shipped policies plus the approval tests' identities,
  publications recorded (nothing executes).
- `console_people`: console users with passwords: oncall@ and lead@ approve HTTP calls, lead@
  also approves bulk mail and is an operator, sre@ approves HTTP calls, nobody@ may approve nothing.
- `console_client`: a function giving a fresh TestClient (own cookie jar) on that runtime;
  `signed_in(client, email)` signs it in through the sign-in form.
- `http_agent` / `mail_agent`: agent keys allowed to ask for gated HTTP deletes / bulk mail;
  `submit_http_delete` and `submit_bulk_mail` (module functions) submit a gated call.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from outbox.actions.service import parse_envelope, submit
from outbox.agents.service import authenticate
from outbox.api.app import create_app
from outbox.runtime import Runtime
from outbox.users.models import Role
from outbox.users.service import add_user, set_password
from tests.approvals.support import EXTRA_RULES
from tests.support.agents import make_agent
from tests.support.dispatchers import RecordingDispatcher

PASSWORD = "correct horse battery staple"
PEOPLE = {
    "oncall@example.com": Role.APPROVER,
    "lead@example.com": Role.OPERATOR,
    "sre@example.com": Role.APPROVER,
    "nobody@example.com": Role.APPROVER,
}


@pytest.fixture
def console_runtime(policy_dir: Path, make_runtime: Callable[..., Runtime]) -> Runtime:
    with (policy_dir / "rules.csv").open("a", encoding="utf-8") as rules:
        rules.write(EXTRA_RULES)
    return make_runtime(RecordingDispatcher())


@pytest.fixture
def console_people(console_runtime: Runtime) -> dict[str, Role]:
    for email, role in PEOPLE.items():
        add_user(console_runtime.db, email, role=role, actor="test")
        set_password(console_runtime.db, email, PASSWORD, actor="test")
    return PEOPLE


@pytest.fixture
def console_client(console_runtime: Runtime, console_people: dict[str, Role]) -> Iterator[Callable[[], TestClient]]:
    """Fresh clients of one app. https, so that the Secure session cookie is sent back (the
    TestClient's peer is not loopback)."""
    app = create_app(runtime=console_runtime)
    clients: list[TestClient] = []

    def build() -> TestClient:
        client = TestClient(app, base_url="https://testserver", raise_server_exceptions=False, follow_redirects=False)
        client.__enter__()
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


def hidden_field(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match is not None, f"no hidden field {name} in the page"
    return match.group(1)


def signed_in(client: TestClient, email: str, password: str = PASSWORD) -> TestClient:
    form = client.get("/console/sign-in")
    assert form.status_code == 200
    answer = client.post(
        "/console/sign-in",
        data={
            "email": email,
            "password": password,
            "form_token": hidden_field(form.text, "form_token"),
            "next": "/console",
        },
    )
    assert answer.status_code == 303, answer.text
    return client


@pytest.fixture
def http_agent(console_runtime: Runtime) -> str:
    return make_agent(console_runtime.db, "deployer", ["http-writer"])


@pytest.fixture
def mail_agent(console_runtime: Runtime) -> str:
    return make_agent(console_runtime.db, "newsletter", ["mailer"])


def _submit(runtime: Runtime, key: str, envelope: dict[str, Any]) -> str:
    with runtime.db.session() as session:
        agent = authenticate(session, key)
    assert agent is not None
    answer = submit(
        runtime, agent, parse_envelope(envelope), str(uuid.uuid4()), {"method": "POST", "path": "/v1/actions"}
    )
    assert answer.action_id is not None
    return answer.action_id


def submit_http_delete(runtime: Runtime, key: str, path: str = "/items/1", *, on_behalf_of: str | None = None) -> str:
    """A DELETE policy sends to an HTTP approver (two of them under /prod/); its action id."""
    envelope: dict[str, Any] = {
        "tool": "http.request",
        "args": {"method": "DELETE", "url": f"http://127.0.0.1:9/{path.lstrip('/')}"},
        "reason": "remove a stale test item",
    }
    if on_behalf_of is not None:
        envelope["on_behalf_of"] = on_behalf_of
    return _submit(runtime, key, envelope)


def submit_bulk_mail(runtime: Runtime, key: str, html: str, text: str = "Hello reader.\n") -> str:
    """Bulk mail from the development subdomain: lead@ approves it."""
    return _submit(
        runtime,
        key,
        {
            "tool": "email.send",
            "args": {
                "from": "News <news@agents.mail.example.com>",
                "to": ["reader@example.net"],
                "subject": "This week's news",
                "text": text,
                "html": html,
                "category": "bulk",
            },
            "reason": "the weekly newsletter",
        },
    )
