"""Fixtures and helpers shared by the approval and Slack tests (imported by their conftests)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import update
from sqlmodel import col, select

from outbox.actions.models import Action
from outbox.actions.service import parse_envelope, submit
from outbox.agents.service import authenticate
from outbox.api.app import create_app
from outbox.approvals.models import ApprovalRequest
from outbox.approvals.schemas import ApprovalOut
from outbox.approvals.service import get_approval
from outbox.audit.models import AuditEvent
from outbox.deliveries.models import Delivery
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from tests.slack.fake_slack import BOT_TOKEN, FakeSlack
from tests.slack.payloads import SIGNING_SECRET
from tests.support.agents import make_agent
from tests.support.dispatchers import RecordingDispatcher

ADMIN_TOKEN = "admin-token-for-tests-0123456789abcdef"
# Identities the tests use, on top of the shipped rules (user:oncall@…, user:lead@…, slack:U0123ABC).
EXTRA_RULES = """
# --- test identities ---
g, slack:U0LEAD1, user:lead@example.com
g, slack:U0SRE22, role:approver-http
g, user:sre@example.com, role:approver-http
"""


@pytest.fixture
def approver_policy(policy_dir: Path) -> Path:
    with (policy_dir / "rules.csv").open("a", encoding="utf-8") as rules:
        rules.write(EXTRA_RULES)
    return policy_dir


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    server = FakeSlack()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def gate_runtime(approver_policy: Path, make_runtime: Callable[..., Runtime]) -> Runtime:
    """A runtime without Slack (the CLI/API-only setup), recording publications."""
    return make_runtime(RecordingDispatcher(), admin_token=SecretStr(ADMIN_TOKEN))


@pytest.fixture
def slack_runtime(approver_policy: Path, make_runtime: Callable[..., Runtime], fake_slack: FakeSlack) -> Runtime:
    return make_runtime(
        RecordingDispatcher(),
        admin_token=SecretStr(ADMIN_TOKEN),
        slack_bot_token=SecretStr(BOT_TOKEN),
        slack_signing_secret=SecretStr(SIGNING_SECRET),
        slack_api_url=fake_slack.base_url,
        slack_default_channel="#approvals",
        slack_timeout_seconds=2.0,
        delivery_retry_base_seconds=0.05,
        delivery_retry_max_seconds=0.2,
    )


def client_for(runtime: Runtime) -> TestClient:
    return TestClient(create_app(runtime=runtime), raise_server_exceptions=False)


def deployer(runtime: Runtime) -> str:
    return make_agent(runtime.db, "deployer", ["http-writer"])


def submit_call(
    runtime: Runtime,
    key: str,
    *,
    method: str,
    url: str,
    on_behalf_of: str | None = None,
    reason: str | None = "clean up a test resource",
    callback_url: str | None = None,
) -> str:
    with runtime.db.session() as session:
        agent = authenticate(session, key)
    assert agent is not None
    envelope: dict[str, Any] = {"tool": "http.request", "args": {"method": method, "url": url}}
    if on_behalf_of is not None:
        envelope["on_behalf_of"] = on_behalf_of
    if reason is not None:
        envelope["reason"] = reason
    if callback_url is not None:
        envelope["callback_url"] = callback_url
    answer = submit(
        runtime, agent, parse_envelope(envelope), str(uuid.uuid4()), {"method": "POST", "path": "/v1/actions"}
    )
    assert answer.action_id is not None
    return answer.action_id


def approval_of(runtime: Runtime, action_id: str) -> ApprovalOut:
    with runtime.db.session() as session:
        return get_approval(session, action_id)


def action_of(runtime: Runtime, action_id: str) -> Action:
    with runtime.db.session() as session:
        action = session.get(Action, action_id)
    assert action is not None
    return action


def event_types(runtime: Runtime, action_id: str) -> list[str]:
    with runtime.db.session() as session:
        rows = session.exec(
            select(AuditEvent).where(col(AuditEvent.action_id) == action_id).order_by(col(AuditEvent.id))
        ).all()
    return [e.event_type for e in rows]


def force_expiry(runtime: Runtime, action_id: str) -> None:
    with runtime.db.session() as session:
        session.execute(
            update(ApprovalRequest)
            .where(col(ApprovalRequest.action_id) == action_id)
            .values(expires_at=utcnow().replace(microsecond=0).replace(year=2000))
        )


def deliveries(runtime: Runtime, kind: str | None = None) -> list[Delivery]:
    with runtime.db.session() as session:
        query = select(Delivery).order_by(col(Delivery.created_at))
        if kind is not None:
            query = query.where(col(Delivery.kind) == kind)
        return list(session.exec(query).all())


def make_due(runtime: Runtime) -> None:
    """Skip the backoff: every pending delivery is due now."""
    with runtime.db.session() as session:
        session.execute(update(Delivery).where(col(Delivery.state) == "pending").values(not_before=utcnow()))


class CallbackReceiver:
    """An agent's callback endpoint on loopback: records what it receives, can fail on purpose
    (each status in `failures` answers one request, with `retry_after` as its Retry-After)."""

    def __init__(self, retry_after: str | None = None) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.failures: list[int] = []
        self.retry_after = retry_after
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.lock:
                    status = receiver.failures.pop(0) if receiver.failures else 204
                    if status == 204:
                        receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                if status != 204 and receiver.retry_after is not None:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/outbox"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def callback_receiver() -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    yield receiver
    receiver.stop()
