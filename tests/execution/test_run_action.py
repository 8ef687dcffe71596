"""Claiming, executing and recording actions; what the sweeper repairs."""

from __future__ import annotations

import random
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import col

from outbox.actions.models import Action
from outbox.agents.service import revoke_agent
from outbox.budgets.models import BudgetCounter
from outbox.execution.service import _execute, _record_outcome, claim, run_action
from outbox.execution.sweeper import sweep_once
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from tests.support.agents import make_agent
from tests.support.calls import events, load, submit_call
from tests.support.http_target import TargetServer


@pytest.fixture
def key(runtime: Runtime) -> str:
    return make_agent(runtime.db, "worker-test", ["http-writer"])


def get(url: str) -> dict[str, str]:
    return {"method": "GET", "url": url}


def test_an_action_runs_once_and_records_what_happened(runtime: Runtime, key: str, target_server: TargetServer) -> None:
    action_id = submit_call(
        runtime,
        key,
        "http.request",
        {"method": "POST", "url": f"{target_server.base_url}/v1/orders", "json": {"sku": "A-1", "qty": 2}},
        "order-1",
    )

    assert run_action(runtime, action_id) == "succeeded"
    assert run_action(runtime, action_id) is None  # a second delivery of the same message does nothing

    received = target_server.received("/v1/orders")
    assert len(received) == 1
    assert received[0].headers["idempotency-key"] == "worker-test:order-1"
    assert received[0].body == b'{"qty":2,"sku":"A-1"}'
    action = load(runtime, action_id)
    assert action.status == "succeeded"
    assert action.attempts == 1
    assert action.artifact is not None and action.response is not None
    assert action.artifact["body"] == '{"qty":2,"sku":"A-1"}'
    assert action.response["status"] == 200
    assert (
        action.response["body"]
        == '{"method": "POST", "path": "/v1/orders", "body": "{\\"qty\\":2,\\"sku\\":\\"A-1\\"}"}'
    )
    assert ["Content-Type", "application/json"] in action.response["headers"]
    assert events(runtime, action_id) == [
        (None, "received", "action.received"),
        ("received", "queued", "action.queued"),
        ("queued", "running", "action.running"),
        ("running", "succeeded", "action.succeeded"),
    ]


def test_server_errors_are_retried_with_backoff_then_fail(
    runtime: Runtime, key: str, target_server: TargetServer
) -> None:
    action_id = submit_call(runtime, key, "http.request", get(f"{target_server.base_url}/status/503"))

    # Full jitter may draw any delay down to zero; this seed's first draw is 96% of the ceiling.
    assert run_action(runtime, action_id, rng=random.Random(2)) == "queued"
    action = load(runtime, action_id)
    assert action.attempts == 1
    assert action.not_before is not None and action.not_before > utcnow()
    assert action.not_before - action.updated_at <= timedelta(seconds=runtime.settings.retry_base_seconds)
    assert "retrying" in (action.status_reason or "")
    # Not due yet: a message delivered now does not run it.
    assert run_action(runtime, action_id) is None

    for attempt in range(2, runtime.settings.max_attempts + 1):
        _make_due(runtime, action_id)
        expected = "failed" if attempt == runtime.settings.max_attempts else "queued"
        assert run_action(runtime, action_id) == expected
    action = load(runtime, action_id)
    assert action.attempts == runtime.settings.max_attempts
    assert action.status_reason is not None and action.status_reason.startswith("gave up after 5 attempt(s)")
    assert len(target_server.received("/status/503")) == runtime.settings.max_attempts


def test_client_errors_fail_without_retry(runtime: Runtime, key: str, target_server: TargetServer) -> None:
    action_id = submit_call(runtime, key, "http.request", get(f"{target_server.base_url}/status/404"))
    assert run_action(runtime, action_id) == "failed"
    assert load(runtime, action_id).response["status"] == 404  # type: ignore[index]


def test_redirects_are_recorded_not_followed(runtime: Runtime, key: str, target_server: TargetServer) -> None:
    action_id = submit_call(runtime, key, "http.request", get(f"{target_server.base_url}/redirect"))
    assert run_action(runtime, action_id) == "succeeded"
    response = load(runtime, action_id).response
    assert response is not None
    assert response["status"] == 302
    assert ["Location", "http://example.invalid/elsewhere"] in response["headers"]


def test_response_bodies_are_capped_and_flagged(make_runtime, target_server: TargetServer) -> None:  # type: ignore[no-untyped-def]
    runtime = make_runtime(http_max_response_bytes=4096)
    key = make_agent(runtime.db, "cap", ["http-reader"])
    action_id = submit_call(runtime, key, "http.request", get(f"{target_server.base_url}/big/100000"))
    assert run_action(runtime, action_id) == "succeeded"
    response = load(runtime, action_id).response
    assert response is not None
    assert len(response["body"]) == 4096
    assert response["truncated"] is True


def test_host_rate_limit_defers_instead_of_failing(
    runtime: Runtime, key: str, target_server: TargetServer, policy_dir: Path
) -> None:
    (policy_dir / "http.yaml").write_text(
        f'hosts:\n  "127.0.0.1:{target_server.port}":\n    requests_per_minute: 2\n    max_concurrent: 5\n'
    )
    runtime.policy.reload()
    ids = [submit_call(runtime, key, "http.request", get(f"{target_server.base_url}/rl/{n}")) for n in range(3)]

    assert [run_action(runtime, i) for i in ids] == ["succeeded", "succeeded", "deferred"]
    deferred = load(runtime, ids[2])
    assert deferred.not_before is not None
    assert deferred.not_before > utcnow()
    assert deferred.not_before.second == 0 and deferred.not_before.microsecond == 0  # the next minute window
    assert deferred.attempts == 0  # waiting is not an attempt
    assert "2 request(s) per minute" in (deferred.status_reason or "")
    assert len(target_server.received("/rl/")) == 2

    # When the window reopens the sweeper queues it again and it runs.
    # Let the minute pass: move the deferral and the spent window into the past.
    _set(runtime, ids[2], not_before=utcnow() - timedelta(seconds=1))
    with runtime.db.session() as session:
        session.execute(update(BudgetCounter).values(window_start=utcnow() - timedelta(minutes=5)))
    report = sweep_once(runtime)
    assert report.resumed == 1
    assert ids[2] in report.republished
    assert run_action(runtime, ids[2]) == "succeeded"


def test_host_concurrency_limit_is_shared_by_all_workers(
    runtime: Runtime, key: str, target_server: TargetServer, policy_dir: Path
) -> None:
    (policy_dir / "http.yaml").write_text(
        f'hosts:\n  "127.0.0.1:{target_server.port}":\n    requests_per_minute: 100\n    max_concurrent: 1\n'
    )
    runtime.policy.reload()
    ids = [submit_call(runtime, key, "http.request", get(f"{target_server.base_url}/slow/0.5")) for _ in range(3)]
    results: dict[str, str | None] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, run_action(runtime, i))) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert target_server.max_in_flight == 1
    assert sorted(v or "" for v in results.values()) == ["deferred", "deferred", "succeeded"]


def test_a_crashed_worker_lease_expires_and_the_sweeper_redrives_it(
    runtime: Runtime, key: str, target_server: TargetServer
) -> None:
    action_id = submit_call(runtime, key, "http.request", get(f"{target_server.base_url}/crash"))
    assert claim(runtime, action_id, "worker-that-dies") is not None  # ... and it never reports back
    assert sweep_once(runtime).lease_expired == 0  # the lease still runs

    _set(runtime, action_id, lease_expires_at=utcnow() - timedelta(seconds=1))
    report = sweep_once(runtime)
    assert report.lease_expired == 1
    assert action_id in report.republished
    assert run_action(runtime, action_id) == "succeeded"
    action = load(runtime, action_id)
    assert action.attempts == 2
    assert ("running", "queued", "action.lease_expired") in events(runtime, action_id)


def test_lease_expiry_on_the_last_attempt_fails_with_the_reason(make_runtime, target_server: TargetServer) -> None:  # type: ignore[no-untyped-def]
    runtime = make_runtime(max_attempts=1)
    key = make_agent(runtime.db, "one-shot", ["http-reader"])
    action_id = submit_call(runtime, key, "http.request", get(f"{target_server.base_url}/x"))
    claim(runtime, action_id, "doomed")
    _set(runtime, action_id, lease_expires_at=utcnow() - timedelta(seconds=1))
    assert sweep_once(runtime).exhausted == 1
    action = load(runtime, action_id)
    assert action.status == "failed"
    assert "lease expired" in (action.status_reason or "")


def test_the_late_result_of_a_worker_that_lost_its_lease_is_kept_as_evidence(
    runtime: Runtime, key: str, target_server: TargetServer
) -> None:
    action_id = submit_call(runtime, key, "http.request", get(f"{target_server.base_url}/late"))
    claimed = claim(runtime, action_id, "slow-worker")
    assert claimed is not None
    _set(runtime, action_id, lease_expires_at=utcnow() - timedelta(seconds=1))
    sweep_once(runtime)
    outcome = _execute(runtime, claimed)
    assert _record_outcome(runtime, claimed.action, "slow-worker", outcome) == "lease_lost"
    assert (None, None, "action.late_result") in events(runtime, action_id)
    assert load(runtime, action_id).status == "queued"


def test_policy_is_checked_again_at_execution(
    runtime: Runtime, key: str, target_server: TargetServer, policy_dir: Path
) -> None:
    action_id = submit_call(runtime, key, "http.request", get(f"{target_server.base_url}/v1/later"))
    rules = policy_dir / "rules.csv"
    rules.write_text(rules.read_text() + "p, role:http-reader, http:127.0.0.1:*/v1/later, get, deny\n")
    assert runtime.policy.reload()[0]

    assert run_action(runtime, action_id) == "failed"
    assert "no longer allows" in (load(runtime, action_id).status_reason or "")
    assert target_server.received("/v1/later") == []


def test_a_revoked_agent_s_queued_actions_do_not_run(runtime: Runtime, key: str, target_server: TargetServer) -> None:
    action_id = submit_call(runtime, key, "http.request", get(f"{target_server.base_url}/revoked"))
    with runtime.db.session() as session:
        revoke_agent(session, "worker-test", actor="test")
    assert run_action(runtime, action_id) == "failed"
    assert target_server.received("/revoked") == []


def test_unclaimed_queued_actions_are_republished(runtime: Runtime, key: str) -> None:
    # Far longer than a sweep takes on a loaded machine, so "not again right away" holds.
    runtime.settings.republish_after_seconds = 30.0
    action_id = submit_call(runtime, key, "http.request", get("http://127.0.0.1:9/lost"))
    assert sweep_once(runtime).republished == []  # just published: give the broker a chance
    _set(runtime, action_id, last_published_at=utcnow() - timedelta(seconds=31))
    assert sweep_once(runtime).republished == [action_id]
    assert sweep_once(runtime).republished == []  # not again right away


def _set(runtime: Runtime, action_id: str, **values: object) -> None:
    with runtime.db.session() as session:
        session.execute(update(Action).where(col(Action.id) == action_id).values(**values))


def _make_due(runtime: Runtime, action_id: str) -> None:
    _set(runtime, action_id, not_before=utcnow() - timedelta(seconds=1))


def test_a_long_waiting_action_is_republished_less_and_less_often(runtime: Runtime, key: str) -> None:
    """Workers behind a backlog do not lose messages: an action that has waited for ten minutes
    is published again only when its last publication is older than half that wait, not every
    few seconds (each duplicate is a claim a worker makes in vain)."""
    action_id = submit_call(runtime, key, "http.request", get("http://127.0.0.1:9/backlog"))
    now = utcnow()
    _set(runtime, action_id, created_at=now - timedelta(minutes=10), last_published_at=now - timedelta(minutes=4))
    assert sweep_once(runtime).republished == []  # published 4 min ago, waiting 10: not lost yet
    _set(runtime, action_id, last_published_at=now - timedelta(minutes=5, seconds=1))
    assert sweep_once(runtime).republished == [action_id]  # over half its wait: published again
    assert sweep_once(runtime).republished == []


def test_a_retry_counts_its_wait_from_when_it_became_due(runtime: Runtime, key: str) -> None:
    action_id = submit_call(runtime, key, "http.request", get("http://127.0.0.1:9/retried"))
    now = utcnow()
    # Created an hour ago, due again (after a backoff) for 10 s, published 6 s ago: the hour of
    # waiting before it was due does not stretch the interval.
    _set(
        runtime,
        action_id,
        created_at=now - timedelta(hours=1),
        not_before=now - timedelta(seconds=10),
        last_published_at=now - timedelta(seconds=6),
    )
    assert sweep_once(runtime).republished == [action_id]
