"""Prometheus metrics: what /metrics says about the database, the policy and this process."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from sqlmodel import col

from outbox import metrics
from outbox.actions.models import Action, ActionStatus
from outbox.config import Settings
from outbox.db import Database
from outbox.execution.queue_state import read_queue_state
from outbox.execution.service import run_action
from outbox.execution.sweeper import sweep_once
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from tests.support.agents import bearer, make_agent
from tests.support.calls import submit_call
from tests.support.http_target import TargetServer

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient, **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def local(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def set_action(runtime: Runtime, action_id: str, **values: object) -> None:
    with runtime.db.session() as session:
        session.execute(update(Action).where(col(Action.id) == action_id).values(**values))


@pytest.fixture
def key(runtime: Runtime) -> str:
    return make_agent(runtime.db, "metrics-bot", ["http-reader"])


def submit(client: TestClient, key: str, url: str) -> int:
    response = client.post(
        "/v1/actions",
        json={"tool": "http.request", "args": {"method": "GET", "url": url}},
        headers={**bearer(key), "Idempotency-Key": str(uuid.uuid4())},
    )
    return response.status_code


def test_metrics_report_actions_by_state_queue_lag_decisions_and_policy(
    client: TestClient, runtime: Runtime, key: str, target_server: TargetServer
) -> None:
    allowed_before = local("outbox_decisions_total", effect="allow", tool="http.request")
    denied_before = local("outbox_decisions_total", effect="deny", tool="http.request")
    executed_before = local("outbox_execution_duration_seconds_count", tool="http.request", outcome="succeeded")

    assert submit(client, key, f"{target_server.base_url}/orders") == 202
    assert submit(client, key, f"{target_server.base_url}/orders/2") == 202
    assert submit(client, key, f"{target_server.base_url}/admin/users") == 403
    first, second = runtime.dispatcher.published  # type: ignore[attr-defined]
    assert run_action(runtime, first) == "succeeded"
    # The second has been waiting for a worker for 90 seconds.
    set_action(runtime, second, updated_at=utcnow() - timedelta(seconds=90))

    samples = scrape(client)

    assert value(samples, "outbox_actions", status="succeeded") == 1
    assert value(samples, "outbox_actions", status="queued") == 1
    assert value(samples, "outbox_actions", status="denied") == 1
    assert value(samples, "outbox_actions", status="cancelled") == 0
    assert value(samples, "outbox_queue_due_actions") == 1
    lag = value(samples, "outbox_queue_lag_seconds")
    assert lag is not None and 90 <= lag < 120
    assert value(samples, "outbox_metrics_collector_up", collector="database") == 1
    policy = runtime.policy.current
    assert (
        value(samples, "outbox_policy_info", version=policy.version, git_commit=policy.snapshot.git_commit or "") == 1
    )
    assert value(samples, "outbox_policy_reload_failing") == 0
    assert local("outbox_decisions_total", effect="allow", tool="http.request") == allowed_before + 2
    assert local("outbox_decisions_total", effect="deny", tool="http.request") == denied_before + 1
    assert (
        local("outbox_execution_duration_seconds_count", tool="http.request", outcome="succeeded")
        == executed_before + 1
    )


def test_retried_and_delayed_actions_are_due_from_their_not_before(runtime: Runtime, key: str) -> None:
    retried = submit_call(runtime, key, "http.request", {"method": "GET", "url": "http://127.0.0.1:9/a"})
    later = submit_call(runtime, key, "http.request", {"method": "GET", "url": "http://127.0.0.1:9/b"})
    now = utcnow()
    set_action(runtime, retried, not_before=now - timedelta(seconds=30), updated_at=now - timedelta(hours=1))
    set_action(runtime, later, not_before=now + timedelta(minutes=5))

    state = read_queue_state(runtime.db, now)

    assert state.by_status["queued"] == 2
    assert state.due == 1
    assert 29 <= state.lag_seconds <= 31


def test_expired_leases_and_the_approval_backlog_are_reported(runtime: Runtime, key: str) -> None:
    crashed = submit_call(runtime, key, "http.request", {"method": "GET", "url": "http://127.0.0.1:9/a"})
    waiting = submit_call(runtime, key, "http.request", {"method": "GET", "url": "http://127.0.0.1:9/b"})
    now = utcnow()
    set_action(
        runtime,
        crashed,
        status=ActionStatus.RUNNING.value,
        lease_owner="host-a:41:1",
        lease_expires_at=now - timedelta(seconds=5),
    )
    set_action(runtime, waiting, status=ActionStatus.AWAITING_APPROVAL.value, updated_at=now - timedelta(minutes=10))

    state = read_queue_state(runtime.db, now)

    assert state.leases_expired == 1
    assert state.running_owners == ["host-a:41:1"]
    assert state.awaiting_approval == 1
    assert state.oldest_approval_seconds == pytest.approx(600, abs=1)
    assert state.due == 0
    assert state.lag_seconds == 0


@pytest.fixture
def mail_collectors() -> Iterator[None]:
    def mail(_runtime: Runtime) -> list[metrics.Reading]:
        custom = GaugeMetricFamily("outbox_mail_suppressed_addresses", "Suppressed addresses.", value=7)
        return [
            metrics.BudgetUse("agents.mail.example.com", "hour", used=12, limit=200),
            metrics.BudgetUse("agents.mail.example.com", "day", used=40, limit=1000),
            metrics.SubdomainHealth("agents.mail.example.com", breaker_tripped=False, paused=False, dns_ok=True),
            metrics.SubdomainHealth("promo.mail.example.com", breaker_tripped=True, paused=True, detail="bounces 9%"),
            custom,
        ]

    def broken(_runtime: Runtime) -> list[metrics.Reading]:
        raise RuntimeError("ledger unavailable")

    metrics.register_collector("test-mail", mail)
    metrics.register_collector("test-broken", broken)
    yield
    metrics.unregister_collector("test-mail")
    metrics.unregister_collector("test-broken")


@pytest.mark.usefixtures("mail_collectors")
def test_registered_collectors_publish_budgets_breakers_and_pauses(client: TestClient) -> None:
    samples = scrape(client)

    assert value(samples, "outbox_mail_budget_used", subdomain="agents.mail.example.com", cap="hour") == 12
    assert value(samples, "outbox_mail_budget_limit", subdomain="agents.mail.example.com", cap="day") == 1000
    assert value(samples, "outbox_mail_breaker_tripped", subdomain="promo.mail.example.com") == 1
    assert value(samples, "outbox_mail_paused", subdomain="promo.mail.example.com") == 1
    assert value(samples, "outbox_mail_paused", subdomain="agents.mail.example.com") == 0
    assert value(samples, "outbox_mail_dns_ok", subdomain="agents.mail.example.com") == 1
    assert value(samples, "outbox_mail_dns_ok", subdomain="promo.mail.example.com") is None
    assert value(samples, "outbox_mail_suppressed_addresses") == 7
    assert value(samples, "outbox_metrics_collector_up", collector="test-mail") == 1
    # A broken collector is reported, and the rest of the scrape still answers.
    assert value(samples, "outbox_metrics_collector_up", collector="test-broken") == 0
    assert value(samples, "outbox_metrics_collector_up", collector="database") == 1


def test_an_unreachable_database_is_reported_in_the_metrics_not_raised(runtime: Runtime, tmp_path: Path) -> None:
    unreachable = Database(Settings(database_url="postgresql+psycopg://postgres@127.0.0.1:1/none"))
    broken = dataclasses.replace(runtime, db=unreachable)
    try:
        text = metrics.render_metrics(broken, read_queue_state).decode()
    finally:
        unreachable.dispose()
    assert 'outbox_metrics_collector_up{collector="database"} 0.0' in text
    assert "outbox_policy_info{" in text
    assert "outbox_queue_lag_seconds" not in text


def test_metrics_require_the_token_when_one_is_configured(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOX_METRICS_TOKEN", "scrape-secret")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert scrape(client, Authorization="Bearer scrape-secret")


def test_sweeper_passes_and_repairs_are_counted(runtime: Runtime, key: str) -> None:
    action_id = submit_call(runtime, key, "http.request", {"method": "GET", "url": "http://127.0.0.1:9/a"})
    set_action(runtime, action_id, last_published_at=utcnow() - timedelta(minutes=1))
    runs_before = local("outbox_sweeper_runs_total")
    republished_before = local("outbox_sweeper_actions_total", kind="republished")

    report = sweep_once(runtime)

    assert report.republished == [action_id]
    assert local("outbox_sweeper_runs_total") == runs_before + 1
    assert local("outbox_sweeper_actions_total", kind="republished") == republished_before + 1


def test_the_worker_policy_gauge_follows_reloads(runtime: Runtime, policy_dir: Path) -> None:
    old = runtime.policy.current
    metrics.note_worker_policy(old)
    commit = old.snapshot.git_commit or ""
    assert local("outbox_worker_policy_info", version=old.version, git_commit=commit) == 1

    with (policy_dir / "rules.csv").open("a", encoding="utf-8") as rules:
        rules.write("p, role:metrics-reader, http:127.0.0.1:*/metrics/**, get, allow\n")
    ok, new_version = runtime.policy.reload()
    assert ok and new_version != old.version
    metrics.note_worker_policy(runtime.policy.current)

    new_commit = runtime.policy.current.snapshot.git_commit or ""
    assert local("outbox_worker_policy_info", version=new_version, git_commit=new_commit) == 1
    assert local("outbox_worker_policy_info", version=old.version, git_commit=commit) == 0


def test_worker_metrics_need_a_multiprocess_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR"):
        metrics.start_worker_metrics_server(0, "127.0.0.1")


def test_worker_metrics_server_clears_stale_files_and_serves(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"left by an earlier run")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))

    server = metrics.start_worker_metrics_server(0, "127.0.0.1")
    try:
        assert not list(directory.glob("*.db"))
        response = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5)
        assert response.status_code == 200
    finally:
        server.shutdown()
        server.server_close()
