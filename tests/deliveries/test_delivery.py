"""The durable delivery queue: coalescing, changes during a call, leases, giving up."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col

from outbox.approvals.service import decide
from outbox.deliveries import service as delivery
from outbox.deliveries.models import Delivery
from outbox.deliveries.service import KIND_SLACK_MESSAGE, deliver_due
from outbox.execution.sweeper import sweep_once
from outbox.runtime import Runtime
from outbox.slack.client import SlackClient
from outbox.sqltypes import utcnow
from tests.approvals.support import approval_of, deliveries, deployer, make_due, submit_call
from tests.slack.fake_slack import FakeSlack
from tests.support.http_target import TargetServer


def test_changes_before_the_first_post_coalesce_into_one_message(
    slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer
) -> None:
    action_id = submit_call(
        slack_runtime, deployer(slack_runtime), method="DELETE", url=f"{target_server.base_url}/prod/x"
    )
    decide(slack_runtime, action_id, "user:lead@example.com", "approve", via="cli")

    [row] = deliveries(slack_runtime, KIND_SLACK_MESSAGE)
    assert row.generation == 2
    deliver_due(slack_runtime)

    [post] = fake_slack.calls_to("chat.postMessage")
    assert "1 of 2" in str(post.body["blocks"])
    assert fake_slack.calls_to("chat.update") == []
    assert [d.state for d in deliveries(slack_runtime, KIND_SLACK_MESSAGE)] == ["done"]


def test_a_change_during_a_call_renders_again(
    slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    action_id = submit_call(slack_runtime, deployer(slack_runtime), method="DELETE", url=f"{target_server.base_url}/x")
    original = SlackClient.post_message

    def post_while_someone_approves(self: SlackClient, **kwargs: Any) -> Any:
        posted = original(self, **kwargs)
        decide(slack_runtime, action_id, "user:lead@example.com", "approve", via="cli")
        return posted

    monkeypatch.setattr(SlackClient, "post_message", post_while_someone_approves)
    report = deliver_due(slack_runtime)
    assert report.retrying  # rendered an old state: stays pending, due at once
    monkeypatch.setattr(SlackClient, "post_message", original)
    deliver_due(slack_runtime)

    assert "Waiting for approval" in str(fake_slack.calls_to("chat.postMessage")[0].body["blocks"])
    [update] = fake_slack.calls_to("chat.update")
    assert "approved" in str(update.body["blocks"])
    assert approval_of(slack_runtime, action_id).status == "approved"


def test_a_leased_delivery_is_not_made_twice(
    slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer
) -> None:
    submit_call(slack_runtime, deployer(slack_runtime), method="DELETE", url=f"{target_server.base_url}/x")
    [row] = deliveries(slack_runtime, KIND_SLACK_MESSAGE)
    claimed = delivery._claim(slack_runtime, row.id)
    assert claimed is not None

    assert deliver_due(slack_runtime).delivered == []
    assert delivery._claim(slack_runtime, row.id) is None
    assert fake_slack.calls_to("chat.postMessage") == []


def test_deliveries_give_up_after_the_configured_attempts(
    slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer
) -> None:
    slack_runtime.settings = slack_runtime.settings.model_copy(update={"delivery_max_attempts": 3})
    fake_slack.rate_limit(times=10, retry_after=0)
    submit_call(slack_runtime, deployer(slack_runtime), method="DELETE", url=f"{target_server.base_url}/x")

    for _ in range(3):
        make_due(slack_runtime)
        deliver_due(slack_runtime)

    [row] = deliveries(slack_runtime, KIND_SLACK_MESSAGE)
    assert row.state == "dead"
    assert row.attempts == 3
    assert row.pending_key is None


def _expire_leases(runtime: Runtime) -> None:
    with runtime.db.session() as session:
        expired = utcnow() - timedelta(seconds=1)
        session.execute(update(Delivery).where(col(Delivery.lease_until).is_not(None)).values(lease_until=expired))


def test_a_delivery_whose_worker_died_is_made_again_by_the_sweep(
    slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer
) -> None:
    submit_call(slack_runtime, deployer(slack_runtime), method="DELETE", url=f"{target_server.base_url}/x")
    [row] = deliveries(slack_runtime, KIND_SLACK_MESSAGE)
    assert delivery._claim(slack_runtime, row.id) is not None  # ... and the worker dies
    sweep_once(slack_runtime)
    assert fake_slack.calls_to("chat.postMessage") == []  # its lease still runs

    _expire_leases(slack_runtime)
    sweep_once(slack_runtime)

    assert len(fake_slack.calls_to("chat.postMessage")) == 1
    [row] = deliveries(slack_runtime, KIND_SLACK_MESSAGE)
    assert (row.state, row.attempts) == ("done", 2)


def test_a_delivery_whose_worker_died_on_its_last_attempt_is_dead_lettered_with_the_reason(
    slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer
) -> None:
    slack_runtime.settings = slack_runtime.settings.model_copy(update={"delivery_max_attempts": 1})
    submit_call(slack_runtime, deployer(slack_runtime), method="DELETE", url=f"{target_server.base_url}/x")
    [row] = deliveries(slack_runtime, KIND_SLACK_MESSAGE)
    assert delivery._claim(slack_runtime, row.id) is not None
    _expire_leases(slack_runtime)

    assert delivery.redrive_expired(slack_runtime) == [row.id]
    assert delivery.redrive_expired(slack_runtime) == []  # once

    [row] = deliveries(slack_runtime, KIND_SLACK_MESSAGE)
    assert (row.state, row.attempts, row.pending_key, row.lease_until) == ("dead", 1, None, None)
    assert "stopped answering (lease expired); no attempts left" in (row.last_error or "")
    assert deliver_due(slack_runtime).delivered == []
    assert fake_slack.calls_to("chat.postMessage") == []
