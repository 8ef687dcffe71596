"""`outbox status`: queue depth by state, workers seen, policy version, mail health."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlmodel import col
from typer.testing import CliRunner

from outbox import metrics
from outbox.actions.models import Action, ActionStatus
from outbox.cli import status as status_module
from outbox.cli.main import app
from outbox.cli.status import collect_status, mask_url, render_text
from outbox.config import Settings
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from tests.support.agents import make_agent
from tests.support.calls import submit_call


@pytest.fixture
def queued_actions(runtime: Runtime) -> list[str]:
    key = make_agent(runtime.db, "status-bot", ["http-reader"])
    ids = [
        submit_call(runtime, key, "http.request", {"method": "GET", "url": f"http://127.0.0.1:9/{n}"}) for n in range(3)
    ]
    with runtime.db.session() as session:
        session.execute(
            update(Action)
            .where(col(Action.id) == ids[0])
            .values(
                status=ActionStatus.RUNNING.value,
                lease_owner="worker-host:4242:1",
                lease_expires_at=utcnow() + timedelta(minutes=1),
            )
        )
    return ids


@pytest.fixture
def mail_health() -> Iterator[None]:
    def collect(_runtime: Runtime) -> list[metrics.Reading]:
        return [
            metrics.SubdomainHealth("status-test.mail.example.com", breaker_tripped=False, paused=False, dns_ok=True),
            metrics.BudgetUse("status-test.mail.example.com", "hour", used=3, limit=200),
            metrics.SubdomainHealth("promo.mail.example.com", breaker_tripped=True, paused=True, detail="bounces 9%"),
        ]

    # Subdomains the shipped mail.yaml does not have, beside what the real mail collector reports.
    metrics.register_collector("test-status-mail", collect)
    yield
    metrics.unregister_collector("test-status-mail")


@pytest.mark.usefixtures("queued_actions", "mail_health")
def test_status_reports_queue_workers_policy_and_mail(settings: Settings, runtime: Runtime) -> None:
    report = collect_status(settings)

    assert report.queue is not None
    assert report.queue["by_status"]["queued"] == 2
    assert report.queue["by_status"]["running"] == 1
    assert report.queue["due"] == 2
    assert report.workers["running_lease_owners"] == ["worker-host:4242:1"]
    assert report.workers["celery_ping"]["ok"] is None  # embedded mode: nothing to ping
    assert report.policy["version"] == runtime.policy.current.version
    agents = report.mail["subdomains"]["status-test.mail.example.com"]
    assert agents["budgets"] == {"hour": {"used": 3, "limit": 200}}
    assert report.mail["subdomains"]["promo.mail.example.com"]["breaker_tripped"] is True
    assert report.problems == []

    text = render_text(report)
    assert "queued                    2" in text
    assert "holding running actions: 1 (worker-host:4242:1)" in text
    assert runtime.policy.current.version in text
    assert "status-test.mail.example.com: breaker ok, sending, dns ok; hour 3/200" in text
    assert "promo.mail.example.com: BREAKER TRIPPED, PAUSED — bounces 9%" in text


@pytest.mark.usefixtures("queued_actions")
def test_status_command_prints_json(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_module, "get_settings", lambda: settings)
    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # logs (stderr) may interleave with output
    assert report["queue"]["by_status"]["queued"] == 2
    assert report["policy"]["version"].startswith("sha256:")


def test_status_exits_1_when_the_database_cannot_be_read(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    unreachable = settings.model_copy(update={"database_url": "postgresql+psycopg://outbox:pw@127.0.0.1:1/none"})
    monkeypatch.setattr(status_module, "get_settings", lambda: unreachable)
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 1
    assert "database unreachable" in result.output
    assert "pw@" not in result.output


def test_an_unreachable_broker_is_a_problem_not_a_crash(settings: Settings) -> None:
    with_broker = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/4"})
    report = collect_status(with_broker, timeout=0.5)
    assert report.workers["celery_ping"]["ok"] is False
    assert any(problem.startswith("broker unreachable") for problem in report.problems)


def test_passwords_are_masked_in_urls() -> None:
    assert (
        mask_url("postgresql+psycopg://outbox:s3cret@db:5432/outbox")
        == "postgresql+psycopg://outbox:***@db:5432/outbox"
    )
    assert mask_url("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert mask_url("sqlite:///.outbox/outbox.db") == "sqlite:///.outbox/outbox.db"
