"""A callback receiver's Retry-After is honoured in both RFC 9110 forms, capped at an hour;
anything else falls back to the queue's own full-jitter backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from pydantic import SecretStr

from outbox.approvals.service import decide
from outbox.deliveries.service import KIND_CALLBACK
from outbox.execution.sweeper import sweep_once
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from tests.approvals.support import CallbackReceiver, deliveries, deployer, submit_call
from tests.support.http_target import TargetServer


def _http_date(delta: timedelta) -> str:
    return format_datetime(datetime.now(UTC) + delta, usegmt=True)


def _wait_after_answer(runtime: Runtime, target_server: TargetServer, retry_after: str) -> float:
    """Seconds until the callback is tried again after the receiver answered with `retry_after`."""
    receiver = CallbackReceiver(retry_after)
    receiver.failures = [503]
    try:
        runtime.settings = runtime.settings.model_copy(update={"callback_secret": SecretStr("s" * 32)})
        action_id = submit_call(
            runtime, deployer(runtime), method="DELETE", url=f"{target_server.base_url}/x", callback_url=receiver.url
        )
        decide(runtime, action_id, "user:lead@example.com", "deny", via="cli", reason="no")
        before = utcnow()
        sweep_once(runtime)
    finally:
        receiver.stop()
    [pending] = deliveries(runtime, KIND_CALLBACK)
    assert (pending.state, pending.attempts, pending.last_error) == ("pending", 1, "HTTP 503")
    return (pending.not_before - before).total_seconds()


@pytest.mark.parametrize(("header", "low", "high"), [("7", 6.0, 8.5), ("0", -1.0, 1.5), ("120", 119.0, 121.5)])
def test_delta_seconds_are_waited(
    gate_runtime: Runtime, target_server: TargetServer, header: str, low: float, high: float
) -> None:
    assert low <= _wait_after_answer(gate_runtime, target_server, header) <= high


def test_an_http_date_is_waited_for(gate_runtime: Runtime, target_server: TargetServer) -> None:
    assert 100.0 <= _wait_after_answer(gate_runtime, target_server, _http_date(timedelta(minutes=2))) <= 122.0


@pytest.mark.parametrize("header", ["99999999", _http_date(timedelta(days=30))])
def test_a_longer_wait_than_an_hour_is_capped_at_an_hour(
    gate_runtime: Runtime, target_server: TargetServer, header: str
) -> None:
    assert 3590.0 <= _wait_after_answer(gate_runtime, target_server, header) <= 3601.0


@pytest.mark.parametrize(
    "header",
    ["soon", "-5", "1.5", "1e3", "\u00b2", "0x10", _http_date(timedelta(minutes=-5)), "Fri, 31 Feb 2026 25:00:00 GMT"],
)
def test_an_unusable_retry_after_falls_back_to_the_backoff(
    gate_runtime: Runtime, target_server: TargetServer, header: str
) -> None:
    # The first retry waits up to the base delay (full jitter), whatever the receiver said.
    base = gate_runtime.settings.delivery_retry_base_seconds
    assert 0.0 <= _wait_after_answer(gate_runtime, target_server, header) <= base + 0.5
