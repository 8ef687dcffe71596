"""Per-action callbacks: POSTed once per terminal state, signed, retried until accepted."""

from __future__ import annotations

import json
import time

from pydantic import SecretStr

from outbox.approvals.callbacks import DELIVERY_HEADER, SIGNATURE_HEADER, sign, verify
from outbox.approvals.delivery import KIND_CALLBACK
from outbox.approvals.service import decide
from outbox.execution.service import run_action
from outbox.execution.sweeper import sweep_once
from outbox.runtime import Runtime
from tests.approvals.support import CallbackReceiver, deliveries, deployer, make_due, submit_call
from tests.support.http_target import TargetServer

SECRET = "callback-secret-for-tests"


def with_secret(runtime: Runtime) -> Runtime:
    runtime.settings = runtime.settings.model_copy(update={"callback_secret": SecretStr(SECRET)})
    return runtime


def test_a_terminal_state_is_posted_once_with_a_valid_signature(
    gate_runtime: Runtime, target_server: TargetServer, callback_receiver: CallbackReceiver
) -> None:
    runtime = with_secret(gate_runtime)
    action_id = submit_call(
        runtime,
        deployer(runtime),
        method="DELETE",
        url=f"{target_server.base_url}/x",
        callback_url=callback_receiver.url,
    )
    sweep_once(runtime)
    assert callback_receiver.received == []  # awaiting approval is not terminal

    decide(runtime, action_id, "user:lead@example.com", "approve", via="cli")
    assert run_action(runtime, action_id) == "succeeded"
    sweep_once(runtime)
    sweep_once(runtime)

    [(headers, body)] = callback_receiver.received
    assert verify(SECRET, headers[SIGNATURE_HEADER.lower()], body)
    assert not verify("another-secret", headers[SIGNATURE_HEADER.lower()], body)
    assert headers["x-outbox-event"] == "action.succeeded"
    payload = json.loads(body)
    assert payload["event"] == "action.succeeded"
    assert payload["action"]["id"] == action_id
    assert payload["action"]["result"]["response"]["status"] == 200
    assert payload["delivery_id"] == headers[DELIVERY_HEADER.lower()]


def test_a_rejection_is_posted_with_the_problem(
    gate_runtime: Runtime, target_server: TargetServer, callback_receiver: CallbackReceiver
) -> None:
    runtime = with_secret(gate_runtime)
    action_id = submit_call(
        runtime,
        deployer(runtime),
        method="DELETE",
        url=f"{target_server.base_url}/x",
        callback_url=callback_receiver.url,
    )
    decide(runtime, action_id, "user:lead@example.com", "deny", via="cli", reason="no deletes on Fridays")

    sweep_once(runtime)

    [(_headers, body)] = callback_receiver.received
    payload = json.loads(body)
    assert payload["event"] == "action.rejected"
    assert payload["action"]["problem"]["reason"] == "no deletes on Fridays"


def test_a_failing_receiver_is_retried_until_it_accepts(
    gate_runtime: Runtime, target_server: TargetServer, callback_receiver: CallbackReceiver
) -> None:
    runtime = with_secret(gate_runtime)
    callback_receiver.failures = [503, 500]
    action_id = submit_call(
        runtime,
        deployer(runtime),
        method="DELETE",
        url=f"{target_server.base_url}/x",
        callback_url=callback_receiver.url,
    )
    decide(runtime, action_id, "user:lead@example.com", "deny", via="cli", reason="no")

    sweep_once(runtime)
    [pending] = deliveries(runtime, KIND_CALLBACK)
    assert pending.state == "pending" and pending.last_error == "HTTP 503"
    make_due(runtime)
    sweep_once(runtime)
    make_due(runtime)
    sweep_once(runtime)

    [done] = deliveries(runtime, KIND_CALLBACK)
    assert done.state == "done"
    assert done.attempts == 3
    assert len(callback_receiver.received) == 1


def test_without_a_secret_no_unsigned_callback_is_sent(
    gate_runtime: Runtime, target_server: TargetServer, callback_receiver: CallbackReceiver
) -> None:
    action_id = submit_call(
        gate_runtime,
        deployer(gate_runtime),
        method="DELETE",
        url=f"{target_server.base_url}/x",
        callback_url=callback_receiver.url,
    )
    decide(gate_runtime, action_id, "user:lead@example.com", "deny", via="cli", reason="no")

    sweep_once(gate_runtime)

    [dead] = deliveries(gate_runtime, KIND_CALLBACK)
    assert dead.state == "dead"
    assert "OUTBOX_CALLBACK_SECRET" in (dead.last_error or "")
    assert callback_receiver.received == []


def test_signatures_are_stripe_style_and_expire() -> None:
    body = b'{"event":"action.failed"}'
    now = int(time.time())
    header = sign(SECRET, now, body)

    assert header.startswith(f"t={now},v1=")
    assert verify(SECRET, header, body, now=now + 299)
    assert not verify(SECRET, header, body, now=now + 301)
    assert not verify(SECRET, header, body + b" ", now=now)
    assert not verify(SECRET, "garbage", body)
