"""Real traffic for `outbox policy replay`: agents calling tools over the real HTTP face of a
runtime, the calls run by the real pipeline (http.request to a loopback server, email.send to a
loopback Maildir sink), approvals given by a person, then exported as `outbox audit export`
writes it. Used by the replay tests and by scripts/make_replay_fixture.py, which makes the
fixture the policy workflow replays (tests/fixtures/recordings/quickstart.jsonl).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from pydantic import SecretStr

from outbox.actions.models import ActionStatus
from outbox.agents.service import create_agent
from outbox.api.app import create_app
from outbox.approvals.service import decide
from outbox.audit.sealer import seal_all
from outbox.execution.service import run_action
from outbox.mail.embedded import ensure_development_keys
from outbox.mail.sending.sink import MaildirSink
from outbox.mail.sending.tool import EmailSendTool
from outbox.recordings.export import export_jsonl
from outbox.runtime import Runtime

# The quickstart's agents and the roles policies/rules.csv gives them.
AGENTS = {"reader-bot": ["http-reader"], "writer-bot": ["http-writer"], "mailer-bot": ["mailer"]}
APPROVER = "user:lead@example.com"
QUICKSTART_SUBDOMAIN = "agents.mail.example.com"
WINDOW_SUBDOMAIN = "reminders.mail.example.com"


@contextmanager
def mail_sink(directory: Path) -> Iterator[MaildirSink]:
    """A Maildir sink on a free loopback port: where development subdomains deliver."""
    sink = MaildirSink(directory).start()
    try:
        yield sink
    finally:
        sink.stop()


def mail_settings(work: Path, sink: MaildirSink) -> dict[str, Any]:
    """Settings a runtime needs to send the shipped mail.yaml's development mail to `sink`."""
    return {
        "mail_sink_port": sink.port,
        "dkim_key_dir": work,
        "unsubscribe_secret": SecretStr("replay-fixture-unsubscribe-secret-0123456789"),
    }


@dataclass
class Traffic:
    """Agents making calls through the runtime's HTTP face; every call the pipeline queues runs."""

    runtime: Runtime
    client: TestClient
    keys: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        with self.runtime.db.session() as session:
            for name, roles in AGENTS.items():
                _agent, self.keys[name] = create_agent(session, name, roles, actor="replay-fixture")
        tool = self.runtime.policy.current.tools.get("email.send")
        if isinstance(tool, EmailSendTool):
            ensure_development_keys(self.runtime, tool.config.development_subdomains())

    def call(self, agent: str, tool: str, args: dict[str, Any], **envelope: Any) -> str:
        """Submit as `agent` (with more envelope fields, e.g. `callback_url`); run the action
        when policy queued it. Returns the action's id."""
        answer = self.client.post(
            "/v1/actions",
            json={"tool": tool, "args": args, **envelope},
            headers={"Authorization": f"Bearer {self.keys[agent]}", "Idempotency-Key": str(uuid.uuid4())},
        )
        assert answer.status_code in (200, 202, 403), answer.text
        body = answer.json()
        action_id = str(body.get("id") or body.get("action_id"))
        if body.get("status") == ActionStatus.QUEUED.value:
            run_action(self.runtime, action_id)
        return action_id

    def approve(self, action_id: str) -> None:
        decide(self.runtime, action_id, APPROVER, "approve", via="cli")
        run_action(self.runtime, action_id)

    def mail(self, agent: str, subdomain: str, to: str, subject: str) -> str:
        message = {
            "from": f"Reports <reports@{subdomain}>",
            "to": [to],
            "subject": subject,
            "text": "Hello.\n",
            "category": "transactional",
        }
        return self.call(agent, "email.send", message)


@contextmanager
def traffic_on(runtime: Runtime) -> Iterator[Traffic]:
    """The quickstart's agents, calling through the runtime's HTTP face."""
    with TestClient(create_app(runtime=runtime)) as client:
        yield Traffic(runtime, client)


def quickstart_traffic(traffic: Traffic, target_url: str) -> dict[str, str]:
    """A varied day of the quickstart: reads allowed and denied, a write, a delete approved and
    run, one left waiting for two people, mail to the quickstart and the send-window subdomains."""
    url = target_url.rstrip("/")
    ids = {
        "read": traffic.call("reader-bot", "http.request", {"method": "GET", "url": f"{url}/orders/1"}),
        "admin": traffic.call("reader-bot", "http.request", {"method": "GET", "url": f"{url}/admin/users"}),
        "write": traffic.call(
            "writer-bot", "http.request", {"method": "POST", "url": f"{url}/orders", "json": {"sku": "A-1"}}
        ),
        "delete": traffic.call("writer-bot", "http.request", {"method": "DELETE", "url": f"{url}/orders/7"}),
        "prod-delete": traffic.call("writer-bot", "http.request", {"method": "DELETE", "url": f"{url}/prod/orders/8"}),
        "mail": traffic.mail("mailer-bot", QUICKSTART_SUBDOMAIN, "ann@example.net", "Your order shipped"),
        "reminder": traffic.mail("mailer-bot", WINDOW_SUBDOMAIN, "bob@example.org", "Reminder: your appointment"),
    }
    traffic.approve(ids["delete"])
    return ids


def export_text(runtime: Runtime) -> str:
    """`outbox audit export`: seal what is pending, then write the chain."""
    seal_all(runtime.db)
    out = io.StringIO()
    with runtime.db.session() as session:
        export_jsonl(session, out)
    return out.getvalue()
