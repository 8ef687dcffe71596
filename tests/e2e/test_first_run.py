"""A newcomer's first run, as real processes: `outbox agents create` and `outbox serve` in a fresh
directory holding a copy of the shipped policies, with a DNS resolver that nobody may ask.

What a first run must not do: ask DNS about the example subdomains, print Alembic's narration,
leave the newcomer guessing what listens where, or defer the quickstart's mail because of the
hour. (A taken port or a missing policy directory: tests/test_serve.py.)"""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from outbox.mail.sending.sink import read_maildir
from tests.conftest import POLICIES
from tests.support.processes import OUTBOX, free_port, outbox_env, start, stop, wait_ready

pytestmark = pytest.mark.slow

QUICKSTART = "agents.mail.example.com"
DEVELOPMENT = ("agents.mail.example.com", "reminders.mail.example.com")
ALEMBIC_CHATTER = re.compile(r"alembic|Context impl|Running upgrade|non-transactional DDL", re.IGNORECASE)


@dataclass
class FirstRun:
    workdir: Path
    env: dict[str, str]
    resolver: socket.socket
    port: int
    sink_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*OUTBOX, *args], env=self.env, cwd=self.workdir, capture_output=True, text=True, timeout=120, check=False
        )

    def dns_queries(self) -> list[bytes]:
        """Every datagram that reached the resolver (it never answers)."""
        received: list[bytes] = []
        while True:
            try:
                received.append(self.resolver.recv(4096))
            except BlockingIOError:
                return received


@pytest.fixture
def first_run(tmp_path: Path) -> Iterator[FirstRun]:
    shutil.copytree(POLICIES, tmp_path / "policies")
    # Only for the unsubscribe link: the shipped rules make bulk mail wait for a human.
    with (tmp_path / "policies" / "rules.csv").open("a") as rules:
        rules.write(f"\np, role:newsletter, mail:{QUICKSTART}/**, send|bulk, allow\n")
    resolver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    resolver.bind(("127.0.0.1", 0))
    resolver.setblocking(False)
    # A newcomer's defaults (INFO logs), except that any DNS query goes to a socket we read.
    env = outbox_env(
        OUTBOX_LOG_LEVEL="INFO",
        OUTBOX_DNS_RESOLVER=f"127.0.0.1:{resolver.getsockname()[1]}",
        OUTBOX_DNS_TIMEOUT_SECONDS="1",
    )
    try:
        yield FirstRun(tmp_path, env, resolver, free_port(), free_port())
    finally:
        resolver.close()


def _mail(first_run: FirstRun, key: str, idempotency_key: str, category: str) -> httpx.Response:
    return httpx.post(
        f"{first_run.url}/v1/actions",
        json={
            "tool": "email.send",
            "args": {
                "from": f"Support <support@{QUICKSTART}>",
                "to": ["bob@example.net"],
                "subject": "Hello",
                "text": "Hi Bob\n",
                "category": category,
            },
        },
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key, "Prefer": "wait=30"},
        timeout=60,
    )


def test_a_first_serve_says_where_everything_is_asks_no_dns_and_delivers_the_quickstart_mail_at_once(
    first_run: FirstRun,
) -> None:
    created = first_run.cli("agents", "create", "mail-bot", "--role", "mailer")
    assert created.returncode == 0, created.stderr
    assert not ALEMBIC_CHATTER.search(created.stdout + created.stderr), created.stderr
    mail_key = created.stdout.strip()
    newsletter = first_run.cli("agents", "create", "news-bot", "--role", "newsletter")
    assert newsletter.returncode == 0, newsletter.stderr

    log = first_run.workdir / "serve.log"
    args = ["serve", "--port", str(first_run.port), "--sink-port", str(first_run.sink_port)]
    process = start(args, first_run.env, first_run.workdir, log)
    try:
        wait_ready(first_run.url, process, log)
        mcp_mounted = httpx.post(f"{first_run.url}/mcp", json={}, timeout=10).status_code != 404

        # The quickstart's mail: delivered now, whatever the hour (its subdomain has no send window).
        answer = _mail(first_run, mail_key, "hello-bob", "transactional")
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "succeeded", answer.json()
        [delivered] = read_maildir(first_run.workdir / ".outbox" / "maildir")
        assert delivered.recipients == ("bob@example.net",)

        # Bulk mail carries an unsubscribe link: on the port this server listens on, and answered.
        bulk = _mail(first_run, newsletter.stdout.strip(), "news-1", "bulk")
        assert bulk.json()["status"] == "succeeded", bulk.json()
        stored = read_maildir(first_run.workdir / ".outbox" / "maildir")[-1]
        message = email.message_from_bytes(stored.content, policy=email.policy.default)
        [link] = re.findall(r"<(https?://[^>]+)>", str(message["List-Unsubscribe"]))
        assert link.startswith(f"{first_run.url}/unsubscribe/"), link
        assert httpx.post(link, timeout=10).status_code == 200
    finally:
        stop(process)
    output = log.read_text()

    banner = output[: output.index("agent-outbox (development)") + 2000]
    assert f"  API          {first_run.url}\n" in banner
    assert f"  API docs     {first_run.url}/docs\n" in banner
    assert (f"  MCP          {first_run.url}/mcp\n" in banner) is mcp_mounted
    assert f"  console      {first_run.url}/console (sign-in: `outbox users add`)\n" in banner
    assert f"  metrics      {first_run.url}/metrics\n" in banner
    assert f"  mail sink    smtp://127.0.0.1:{first_run.sink_port} → .outbox/maildir\n" in banner
    assert f"  dev mail     {', '.join(DEVELOPMENT)}: to the sink only, no DNS checks\n" in banner
    assert "  database     .outbox/outbox.db (SQLite)\n" in banner
    assert "  policies     policies/\n" in banner  # OUTBOX_POLICY_WATCH=false in tests
    assert "  audit        checkpoints in .outbox/audit-checkpoints.jsonl\n" in banner

    assert not ALEMBIC_CHATTER.search(output), output[:3000]
    # Development subdomains are said once; no DNS verdict (the outreach subdomain has no key here).
    [announced] = [line for line in output.splitlines() if "development" in line and "mail." in line]
    assert "mail.embedded_started" in announced
    assert all(domain in announced for domain in DEVELOPMENT)
    assert "sink only, DNS checks off" in announced
    assert "mail.dns_verdict" not in output
    assert first_run.dns_queries() == []
