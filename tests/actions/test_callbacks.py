"""Per-action callbacks: POSTed once per terminal state, signed, retried until accepted."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlmodel import select

from outbox.actions.callbacks import DELIVERY_HEADER, SIGNATURE_HEADER, sign, verify
from outbox.actions.models import Action
from outbox.actions.service import parse_envelope, submit
from outbox.agents.service import authenticate, revoke_agent
from outbox.approvals.service import decide
from outbox.deliveries.service import KIND_CALLBACK, enqueue
from outbox.execution.service import run_action
from outbox.execution.sweeper import sweep_once
from outbox.runtime import Runtime
from tests.approvals.support import (
    ADMIN_TOKEN,
    CallbackReceiver,
    action_of,
    client_for,
    deliveries,
    deployer,
    make_due,
    submit_call,
)
from tests.support.agents import bearer, make_agent
from tests.support.dispatchers import RecordingDispatcher
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


# --- A callback is an outbound request: policy decides it ---------------------------------------
#
# The shipped rules allow callbacks for role:http-writer to http:127.0.0.1:*/hooks/** only
# (act `callback`). These tests add a rule that says `approve` for a callback, to show that only
# `allow` permits one.

CALLBACK_RULES = """
p, role:http-writer, http:127.0.0.1:*/approval-hooks/**, callback, approve
"""


@pytest.fixture
def callback_runtime(approver_policy: Path, make_runtime: Callable[..., Runtime]) -> Runtime:
    with (approver_policy / "rules.csv").open("a", encoding="utf-8") as rules:
        rules.write(CALLBACK_RULES)
    return with_secret(make_runtime(RecordingDispatcher(), admin_token=SecretStr(ADMIN_TOKEN)))


def post_action(client: TestClient, key: str, url: str, callback_url: str) -> Any:
    return client.post(
        "/v1/actions",
        json={"tool": "http.request", "args": {"method": "GET", "url": url}, "callback_url": callback_url},
        headers={**bearer(key), "Idempotency-Key": str(uuid.uuid4())},
    )


def actions_recorded(runtime: Runtime) -> int:
    with runtime.db.session() as session:
        return len(session.exec(select(Action)).all())


def test_a_callback_policy_does_not_allow_is_refused_at_submission_with_a_422(
    callback_runtime: Runtime, target_server: TargetServer, callback_receiver: CallbackReceiver
) -> None:
    runtime = callback_runtime
    port = callback_receiver.server.server_address[1]
    writer = deployer(runtime)
    nobody = make_agent(runtime.db, "no-roles", [])
    reader = make_agent(runtime.db, "reader", ["http-reader"])
    call = f"{target_server.base_url}/orders"
    refused = [
        # An agent whose every call is denied cannot make the outbox POST anywhere.
        (nobody, f"http://127.0.0.1:{port}/hooks/outbox", "is deny"),
        (nobody, "https://attacker.example/collect", "is deny"),
        # A role with no callback rule.
        (reader, f"http://127.0.0.1:{port}/hooks/outbox", "is deny"),
        # Another host, or another loopback address (not an alias of 127.0.0.1).
        (writer, "https://hooks.example.com/hooks/outbox", "is deny"),
        (writer, f"http://127.0.0.2:{port}/hooks/outbox", "is deny"),
        (writer, f"http://10.0.0.5:{port}/hooks/outbox", "is deny"),
        # Paths outside the allowed prefix.
        (writer, f"http://127.0.0.1:{port}/admin/users", "is deny"),
        (writer, f"http://127.0.0.1:{port}/hooksx/outbox", "is deny"),
        (writer, f"http://127.0.0.1:{port}/hook", "is deny"),
        (writer, f"http://localhost:{port}/v1/orders", "is deny"),
        # `approve` is not enough: no human approves a callback.
        (writer, f"http://127.0.0.1:{port}/approval-hooks/x", "is approve"),
    ]
    with client_for(runtime) as client:
        for key, callback_url, effect in refused:
            response = post_action(client, key, call, callback_url)

            assert response.status_code == 422, callback_url
            assert response.headers["content-type"] == "application/problem+json"
            problem = response.json()
            assert [e["field"] for e in problem["errors"]] == ["callback_url"], callback_url
            assert problem["detail"].startswith("No policy rule allows callbacks to this destination"), callback_url
            assert effect in problem["detail"], callback_url
            assert "callback, allow`" in problem["hint"]
            if effect == "is approve":
                assert "only `allow` permits one" in problem["errors"][0]["message"]
    assert actions_recorded(runtime) == 0
    assert callback_receiver.received == []


def test_a_callback_url_in_an_ambiguous_form_is_refused_naming_callback_url(
    callback_runtime: Runtime, target_server: TargetServer, callback_receiver: CallbackReceiver
) -> None:
    port = callback_receiver.server.server_address[1]
    writer = deployer(callback_runtime)
    ambiguous = [
        f"http://user:pw@127.0.0.1:{port}/hooks/outbox",
        f"http://attacker.example@127.0.0.1:{port}/hooks/outbox",
        f"http://127.0.0.1:{port}/hooks/../admin/users",
        f"http://127.0.0.1:{port}/hooks/%2e%2e/admin",
        f"http://127.0.0.1:{port}/hooks/%252e%252e/admin",
        f"http://127.0.0.1:{port}//hooks/outbox",
        f"http://127.0.0.1:{port}/hooks;x=1/outbox",
        f"http://127.0.0.1:{port}/hooks%2foutbox",
        f"http://127.1:{port}/hooks/outbox",
        f"http://2130706433:{port}/hooks/outbox",
        f"http://0.0.0.0:{port}/hooks/outbox",
        f"http://127.0.0.1:{port}/hooks/outbox#frag",
        "ftp://127.0.0.1/hooks/outbox",
    ]
    with client_for(callback_runtime) as client:
        for callback_url in ambiguous:
            response = post_action(client, writer, f"{target_server.base_url}/orders", callback_url)
            assert response.status_code == 422, callback_url
            assert [e["field"] for e in response.json()["errors"]] == ["callback_url"], callback_url
    assert actions_recorded(callback_runtime) == 0


def test_every_name_of_an_allowed_host_is_accepted_and_stored_in_canonical_form(
    callback_runtime: Runtime, target_server: TargetServer
) -> None:
    port = target_server.port
    writer = deployer(callback_runtime)
    aliases = [
        f"http://localhost:{port}/hooks/outbox",
        f"http://LOCALHOST.:{port}/hooks/outbox",
        f"http://[::1]:{port}/hooks/outbox",
        f"http://[::ffff:127.0.0.1]:{port}/hooks/outbox",
        f"http://127.0.0.1:{port}/hooks/%6Futbox",
    ]
    with client_for(callback_runtime) as client:
        for callback_url in aliases:
            response = post_action(client, writer, f"{target_server.base_url}/orders", callback_url)
            assert response.status_code == 202, (callback_url, response.json())
            stored = action_of(callback_runtime, response.json()["id"]).callback_url
            assert stored == f"http://127.0.0.1:{port}/hooks/outbox", callback_url


def test_the_callback_is_posted_to_exactly_the_canonical_url(
    callback_runtime: Runtime, target_server: TargetServer
) -> None:
    runtime = callback_runtime
    action_id = submit_call(
        runtime,
        deployer(runtime),
        method="DELETE",
        url=f"{target_server.base_url}/orders/1",
        callback_url=f"http://LocalHost.:{target_server.port}/hooks/%6futbox?agent=%7ecrm&x=%2f",
    )
    decide(runtime, action_id, "user:lead@example.com", "deny", via="cli", reason="no")

    sweep_once(runtime)

    [request] = target_server.received("/hooks")
    assert request.method == "POST"
    assert request.path == "/hooks/outbox?agent=~crm&x=%2F"
    assert request.headers["host"] == f"127.0.0.1:{target_server.port}"
    assert verify(SECRET, request.headers[SIGNATURE_HEADER.lower()], request.body)


def test_a_call_policy_denied_is_never_called_back(
    callback_runtime: Runtime, target_server: TargetServer, callback_receiver: CallbackReceiver
) -> None:
    runtime = callback_runtime
    with runtime.db.session() as session:
        agent = authenticate(session, deployer(runtime))
    assert agent is not None
    envelope = parse_envelope(
        {
            "tool": "http.request",
            "args": {"method": "GET", "url": f"{target_server.base_url}/admin/users"},
            "callback_url": callback_receiver.url,
        }
    )
    answer = submit(runtime, agent, envelope, "denied-1", {"method": "POST", "path": "/v1/actions"})
    assert answer.status == 403
    action_id = answer.action_id
    assert action_id is not None
    assert action_of(runtime, action_id).status == "denied"

    sweep_once(runtime)
    sweep_once(runtime)
    assert deliveries(runtime, KIND_CALLBACK) == []

    # Even a callback delivery queued for it (by an older version, say) sends nothing.
    with runtime.db.session() as session:
        enqueue(session, kind=KIND_CALLBACK, subject_id=action_id, coalesce_key=f"callback:{action_id}")
    sweep_once(runtime)
    [dead] = deliveries(runtime, KIND_CALLBACK)
    assert dead.state == "dead"
    assert "denied by policy" in (dead.last_error or "")
    assert callback_receiver.received == []
    assert target_server.requests == []


def test_a_permission_revoked_after_submission_stops_the_callback(
    callback_runtime: Runtime, target_server: TargetServer, callback_receiver: CallbackReceiver
) -> None:
    runtime = callback_runtime
    action_id = submit_call(
        runtime,
        deployer(runtime),
        method="DELETE",
        url=f"{target_server.base_url}/orders/1",
        callback_url=callback_receiver.url,
    )
    rules = runtime.settings.policy_dir / "rules.csv"
    rules.write_text(rules.read_text().replace("p, role:http-writer, http:127.0.0.1:*/hooks/**, callback, allow\n", ""))
    reloaded, message = runtime.policy.reload()
    assert reloaded, message
    decide(runtime, action_id, "user:lead@example.com", "deny", via="cli", reason="no")

    sweep_once(runtime)

    [dead] = deliveries(runtime, KIND_CALLBACK)
    assert dead.state == "dead"
    assert "no longer allows this callback" in (dead.last_error or "")
    assert runtime.policy.current.version in (dead.last_error or "")
    assert callback_receiver.received == []


def test_a_revoked_agent_gets_no_callback(
    callback_runtime: Runtime, target_server: TargetServer, callback_receiver: CallbackReceiver
) -> None:
    runtime = callback_runtime
    action_id = submit_call(
        runtime,
        deployer(runtime),
        method="DELETE",
        url=f"{target_server.base_url}/orders/1",
        callback_url=callback_receiver.url,
    )
    decide(runtime, action_id, "user:lead@example.com", "deny", via="cli", reason="no")
    with runtime.db.session() as session:
        revoke_agent(session, "deployer", actor="test")

    sweep_once(runtime)

    [dead] = deliveries(runtime, KIND_CALLBACK)
    assert dead.state == "dead"
    assert "revoked" in (dead.last_error or "")
    assert callback_receiver.received == []
