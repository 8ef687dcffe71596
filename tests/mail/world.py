"""`email.send` wired into the pipeline, for the tests that run it whole: a real runtime (SQLite and
PostgreSQL), a real SMTP sink, a real DNS server on loopback, the real policy with a mail.yaml
written for each test. The fixtures that build it (`world`, `cli`, `api`) are in conftest.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr
from typer.testing import CliRunner, Result

from outbox.cli.main import app
from outbox.config import get_settings
from outbox.execution.service import run_action
from outbox.mail.sending.dkim_signing import DkimKey, dkim_record_name
from outbox.mail.sending.sink import MaildirSink
from outbox.runtime import Runtime
from tests.mail.dns_server import LoopbackDns
from tests.support.agents import make_agent
from tests.support.calls import load, submit_call

SUBDOMAIN = "agents.mail.example.com"
OTHER = "news.mail.example.com"
SELECTOR = "sel2026"
UNSUBSCRIBE_SECRET = "pipeline-unsubscribe-secret-0123456789abcdef"
EVENTS_TOKEN = "mail-events-token-for-tests-0123456789"
ADMIN_TOKEN = "admin-token-for-mail-tests-0123456789"


def subdomain_config(domain: str, key_file: Path, sink_port: int, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "domain": domain,
        "dkim": {"selector": SELECTOR, "algorithm": "rsa-sha256", "key_file": str(key_file)},
        "relay": {"host": "127.0.0.1", "port": sink_port, "starttls": False},
        "bounce_address": f"bounces@{domain}",
        "enforce_dns_checks": False,
        "budgets": {"per_hour": 1000, "per_day": 10000},
        "breaker": {"bounce_rate": 0.04, "complaint_rate": 0.001, "window_hours": 24, "minimum_sample": 20},
    }
    config.update(overrides)
    return config


def write_mail_yaml(
    policy_dir: Path, subdomains: list[dict[str, Any]], base_url: str = "http://127.0.0.1:8000"
) -> None:
    document = {
        "version": 1,
        "primary_domains": ["example.com"],
        "unsubscribe": {"base_url": f"{base_url}/unsubscribe"},
        "subdomains": subdomains,
    }
    (policy_dir / "mail.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def publish_dns(dns: LoopbackDns, key: DkimKey, domain: str = SUBDOMAIN) -> None:
    dns.publish(domain, "v=spf1 ip4:127.0.0.1 -all")
    dns.publish(dkim_record_name(SELECTOR, domain), key.txt_record())
    dns.publish("_dmarc.example.com", "v=DMARC1; p=reject; adkim=r; aspf=r")


def message(to: str | list[str] = "ann@example.net", **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "from": f"Reports <reports@{SUBDOMAIN}>",
        "to": [to] if isinstance(to, str) else to,
        "subject": "Your weekly report",
        "text": "Hello,\n\nyour report is ready.\n",
        "category": "transactional",
    }
    args.update(overrides)
    return args


@dataclass
class MailWorld:
    """One test's mail setup: the runtime, its sink and DNS, an agent allowed to send."""

    policy_dir: Path
    key_file: Path
    key: DkimKey
    sink: MaildirSink
    dns: LoopbackDns
    make_runtime: Callable[..., Runtime]
    runtime: Runtime | None = None
    agent_key: str = ""

    def configure(
        self, *subdomains: dict[str, Any], settings: dict[str, Any] | None = None, **overrides: Any
    ) -> Runtime:
        """Write mail.yaml (one subdomain with `overrides` by default), build the runtime."""
        write_mail_yaml(
            self.policy_dir,
            list(subdomains) or [subdomain_config(SUBDOMAIN, self.key_file, self.sink.port, **overrides)],
        )
        self.runtime = self.build_runtime(**(settings or {}))
        if not self.agent_key:
            self.agent_key = make_agent(self.runtime.db, "mailer-bot", ["mailer"])
        return self.runtime

    def build_runtime(self, **settings: Any) -> Runtime:
        values: dict[str, Any] = {
            "unsubscribe_secret": UNSUBSCRIBE_SECRET,
            "mail_events_token": EVENTS_TOKEN,
            "admin_token": ADMIN_TOKEN,
            "dns_resolver": self.dns.address,
            "dns_timeout_seconds": 2.0,
            **settings,
        }

        for secret in ("unsubscribe_secret", "mail_events_token", "admin_token"):
            if isinstance(values[secret], str):
                values[secret] = SecretStr(values[secret])
        return self.make_runtime(**values)

    def allow_recipients_at(self, domain: str) -> None:
        """The shipped rules name the recipient domains mailers may reach; add one (before
        `configure`, which loads the policy)."""
        with (self.policy_dir / "rules.csv").open("a") as rules:
            rules.write(f"\np, role:mailer, mail:{SUBDOMAIN}/*@{domain}, send, allow\n")

    @property
    def rt(self) -> Runtime:
        assert self.runtime is not None
        return self.runtime

    def submit(self, args: dict[str, Any] | None = None, key: str | None = None) -> str:
        return submit_call(self.rt, key or self.agent_key, "email.send", args or message())

    def run(self, action_id: str) -> str | None:
        return run_action(self.rt, action_id)

    def send(self, args: dict[str, Any] | None = None) -> tuple[str, str | None]:
        action_id = self.submit(args)
        return action_id, self.run(action_id)

    def status(self, action_id: str) -> str:
        return load(self.rt, action_id).status

    def delivered_ids(self) -> list[str | None]:
        return [m.message_id for m in self.sink.messages()]


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d")


@dataclass
class MailCli:
    """`outbox …` in this process, against the world's database, policies and DNS."""

    env: pytest.MonkeyPatch
    runner: CliRunner

    def use(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.env.setenv("OUTBOX_DATABASE_URL", settings.database_url)
        self.env.setenv("OUTBOX_POLICY_DIR", str(settings.policy_dir))
        self.env.setenv("OUTBOX_DATA_DIR", str(settings.data_dir))
        self.env.setenv("OUTBOX_UNSUBSCRIBE_SECRET", UNSUBSCRIBE_SECRET)
        if settings.dns_resolver:
            self.env.setenv("OUTBOX_DNS_RESOLVER", settings.dns_resolver)
        self.env.setenv("OUTBOX_DNS_TIMEOUT_SECONDS", "2")
        get_settings.cache_clear()

    def __call__(self, *args: str, ok: bool = True) -> Result:
        result = self.runner.invoke(app, list(args))
        if ok:
            assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        return result

    @staticmethod
    def printed(result: Result) -> str:
        return "\n".join(line for line in result.stdout.splitlines() if not LOG_LINE.match(line))


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bounce_dsn(recipient: str, message_id: str, *, status: str = "5.1.1", reporter: str = "mx.example.net") -> bytes:
    """An RFC 3464 bounce as a receiving MTA sends it back (multipart/report)."""
    action = "failed" if status.startswith("5") else "delayed"
    text = f"""From: MAILER-DAEMON@{reporter}
To: bounces@{SUBDOMAIN}
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"
Message-Id: <dsn-{abs(hash((recipient, message_id, status)))}@{reporter}>

--BOUNDARY
Content-Type: text/plain; charset=us-ascii

Your message could not be delivered to {recipient}.

--BOUNDARY
Content-Type: message/delivery-status

Reporting-MTA: dns; {reporter}

Final-Recipient: rfc822; {recipient}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; 550 {status} <{recipient}>: Recipient address rejected: User unknown

--BOUNDARY
Content-Type: text/rfc822-headers

From: Reports <reports@{SUBDOMAIN}>
To: {recipient}
Subject: Your weekly report
Message-ID: {message_id}

--BOUNDARY--
"""
    return text.replace("\n", "\r\n").encode()
