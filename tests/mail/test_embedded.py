"""The quickstart really delivers: `outbox serve` (real uvicorn, SQLite, embedded workers) with the
shipped policies starts the local sink, generates the development DKIM key, and an allowed
`email.send` lands in `.outbox/maildir`, signed with a key that verifies."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import httpx
import pytest
import yaml

from outbox.mail.config import DkimConfig
from outbox.mail.sending.dkim_signing import dkim_record_name, key_record_lookup, load_signing_key
from outbox.mail.sending.sink import read_maildir
from tests.conftest import POLICIES
from tests.support.processes import free_port, outbox_env, run_cli, start, stop, wait_ready

pytestmark = pytest.mark.slow

QUICKSTART = "agents.mail.example.com"


@dataclass
class Quickstart:
    workdir: Path
    env: dict[str, str]
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def quickstart(tmp_path: Path) -> Iterator[Quickstart]:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    # The shipped quickstart subdomain is a development one without a send window: it delivers to
    # the sink at any hour, and its relay is the sink, wherever OUTBOX_MAIL_SINK_PORT puts it (2525
    # may be taken).
    [shipped] = [
        s for s in yaml.safe_load((policies / "mail.yaml").read_text())["subdomains"] if s["domain"] == QUICKSTART
    ]
    assert shipped["development"] is True
    assert "send_window" not in shipped
    sink_port = free_port()
    env = outbox_env(OUTBOX_MAIL_SINK_PORT=str(sink_port), OUTBOX_DNS_TIMEOUT_SECONDS="1")
    running = Quickstart(tmp_path, env, free_port())
    yield running
    if running.process is not None:
        stop(running.process)


def test_outbox_serve_delivers_signed_mail_into_the_local_maildir(quickstart: Quickstart) -> None:
    key = run_cli(["agents", "create", "mailer", "--role", "mailer"], quickstart.env, quickstart.workdir)
    log = quickstart.workdir / "serve.log"
    quickstart.process = start(["serve", "--port", str(quickstart.port)], quickstart.env, quickstart.workdir, log)
    wait_ready(quickstart.url, quickstart.process, log)

    answer = httpx.post(
        f"{quickstart.url}/v1/actions",
        json={
            "tool": "email.send",
            "args": {
                "from": f"Reports <reports@{QUICKSTART}>",
                "to": ["ann@example.net"],
                "subject": "Quickstart",
                "text": "It really arrived.\n",
                "category": "transactional",
            },
        },
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "quickstart-1", "Prefer": "wait=30"},
        timeout=60,
    )

    assert answer.status_code in (200, 202), answer.text
    assert answer.json()["status"] == "succeeded", (answer.json(), log.read_text()[-3000:])
    [stored] = read_maildir(quickstart.workdir / ".outbox" / "maildir")
    assert stored.recipients == ("ann@example.net",)
    key_file = quickstart.workdir / ".outbox" / "dkim" / f"{QUICKSTART}.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    signing = load_signing_key(DkimConfig(selector="agents2026", key_file=key_file))
    assert dkim.verify(stored.content, dnsfunc=key_record_lookup(signing, "agents2026", QUICKSTART))
    record = run_cli(["mail", "dkim-record", "--subdomain", QUICKSTART], quickstart.env, quickstart.workdir)
    assert record.startswith(f"{dkim_record_name('agents2026', QUICKSTART)}. IN TXT")
    status = run_cli(["mail", "status"], quickstart.env, quickstart.workdir)
    assert "1 / 1000" in status or "1 / 200" in status
    # The quickstart subdomains are development ones: the status says so instead of a DNS verdict.
    assert "development: sink only, DNS never checked" in status, status
