"""Where mail's secrets and files come from: the development unsubscribe secret, production's
refusal to run without one, the deployment's public URL, and `outbox mail sink`."""

from __future__ import annotations

import smtplib
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from outbox.config import Settings, UnsafeConfigurationError
from outbox.mail.environment import load_configured_mail, unsubscribe_secret
from outbox.mail.provider import PipelineEmailSendTool
from outbox.mail.sending.sink import read_maildir
from tests.conftest import POLICIES
from tests.mail.world import MailWorld, message
from tests.support.agents import make_agent
from tests.support.calls import load
from tests.support.processes import OUTBOX, free_port, outbox_env, stop, wait_until


def test_development_generates_one_private_unsubscribe_secret_and_keeps_it(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")  # type: ignore[call-arg]

    first = unsubscribe_secret(settings)
    second = unsubscribe_secret(settings)

    assert first == second and len(first) >= 32
    assert (tmp_path / "data" / "unsubscribe-secret").stat().st_mode & 0o777 == 0o600
    configured = settings.model_copy(update={"unsubscribe_secret": SecretStr("s" * 40)})
    assert unsubscribe_secret(configured) == b"s" * 40


def test_production_with_mail_configured_refuses_to_start_without_an_unsubscribe_secret(tmp_path: Path) -> None:
    safe = {
        "environment": "production",
        "admin_token": SecretStr("x" * 32),
        "database_url": "postgresql://db/outbox",
        "broker_url": "redis://redis:6379/0",
        "policy_dir": POLICIES,
        "audit_signing_key": SecretStr("k" * 43),
    }
    with pytest.raises(UnsafeConfigurationError, match="OUTBOX_UNSUBSCRIBE_SECRET"):
        Settings(_env_file=None, **safe).check_production_safety()  # type: ignore[call-arg, arg-type]
    with pytest.raises(UnsafeConfigurationError, match="OUTBOX_UNSUBSCRIBE_SECRET"):
        Settings(_env_file=None, unsubscribe_secret=SecretStr("short"), **safe).check_production_safety()  # type: ignore[call-arg, arg-type]
    Settings(_env_file=None, unsubscribe_secret=SecretStr("u" * 32), **safe).check_production_safety()  # type: ignore[call-arg, arg-type]
    without_mail = {**safe, "policy_dir": tmp_path}
    Settings(_env_file=None, **without_mail).check_production_safety()  # type: ignore[call-arg, arg-type]
    with pytest.raises(ValueError, match="required in production"):
        unsubscribe_secret(Settings(_env_file=None, data_dir=tmp_path, **safe))  # type: ignore[call-arg, arg-type]


def test_the_public_base_url_of_the_deployment_decides_where_unsubscribe_links_point() -> None:
    settings = Settings(_env_file=None, policy_dir=POLICIES, public_base_url="https://outbox.example.com/")  # type: ignore[call-arg]

    config = load_configured_mail(settings)

    assert config is not None
    assert config.unsubscribe.base_url == "https://outbox.example.com/unsubscribe"
    assert load_configured_mail(Settings(_env_file=None, policy_dir=Path("/nonexistent"))) is None  # type: ignore[call-arg]


@pytest.mark.slow  # starts `outbox mail sink`, a real server process
def test_outbox_mail_sink_runs_in_the_foreground_and_stores_mail(tmp_path: Path) -> None:
    port = free_port()
    maildir = tmp_path / "maildir"
    log = tmp_path / "sink.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*OUTBOX, "mail", "sink", "--port", str(port), "--dir", str(maildir)],
            env=outbox_env(),
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert wait_until(lambda: f"127.0.0.1:{port}" in log.read_text(), 30), log.read_text()
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.sendmail("a@agents.mail.example.com", ["b@example.net"], b"Subject: hi\r\n\r\nhello\r\n")
        [stored] = read_maildir(maildir)
        assert stored.recipients == ("b@example.net",)
    finally:
        stop(process)
    assert process.returncode == 0


def test_without_an_unsubscribe_secret_the_policy_loads_but_bulk_mail_is_refused(world: MailWorld) -> None:
    with (world.policy_dir / "rules.csv").open("a") as rules:
        rules.write("\np, role:bulk-mailer, mail:agents.mail.example.com/**, send|bulk, allow\n")
    world.configure(settings={"environment": "production", "unsubscribe_secret": None})
    tool = world.rt.policy.current.tools["email.send"]
    assert isinstance(tool, PipelineEmailSendTool) and tool.secret_problem is not None
    newsletter = make_agent(world.rt.db, "newsletter-bot", ["bulk-mailer"])

    bulk = world.submit(message(category="bulk"), key=newsletter)
    status = world.run(bulk)

    assert status == "failed"
    assert "OUTBOX_UNSUBSCRIBE_SECRET is required in production" in (load(world.rt, bulk).status_reason or "")
    assert world.send(message("bob@example.net"))[1] == "succeeded"  # transactional mail still goes
