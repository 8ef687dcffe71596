"""A replayed Idempotency-Key tells the truth: the action as it is now, never a stale 202.

The IETF draft lets a server send the stored response again; this one answers with the action's
current representation (docs/idempotency.md), so a retrying agent never believes a finished
action is still queued. A replay runs nothing and reads once, without the write lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import event, update
from sqlmodel import col, func, select

from outbox.actions import service
from outbox.actions.models import Action
from outbox.agents.service import authenticate
from outbox.api.app import create_app
from outbox.audit.models import AuditEvent
from outbox.execution.service import run_action
from outbox.idempotency.models import IdempotencyRecord
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from tests.api.test_submit import get_request, post
from tests.support.agents import bearer, make_agent
from tests.support.dispatchers import RecordingDispatcher
from tests.support.http_target import TargetServer

ADMIN_TOKEN = "admin-token-for-replay-tests-0123456789"


def published(runtime: Runtime) -> list[str]:
    return list(runtime.dispatcher.published)  # type: ignore[attr-defined]


def count(runtime: Runtime, table: type[Action] | type[AuditEvent]) -> int:
    with runtime.db.read_session() as session:
        return int(session.exec(select(func.count()).select_from(table)).one())


def test_a_replay_after_success_is_200_with_the_outcome_and_runs_nothing(
    client: TestClient, runtime: Runtime, reader_key: str, target_server: TargetServer
) -> None:
    call = get_request(f"{target_server.base_url}/v1/charge")
    first = post(client, reader_key, call, "pay-once")
    assert first.status_code == 202
    action_id = first.json()["id"]
    assert run_action(runtime, action_id) == "succeeded"
    events_before = count(runtime, AuditEvent)

    again = post(client, reader_key, call, "pay-once")

    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == f"/v1/actions/{action_id}"
    assert again.headers["content-type"] == "application/json"
    body = again.json()
    assert body["status"] == "succeeded"
    assert body["result"]["response"]["status"] == 200
    assert body == client.get(f"/v1/actions/{action_id}", headers=bearer(reader_key)).json()
    # Nothing ran, nothing was published or recorded again.
    assert len(target_server.received("/v1/charge")) == 1
    assert published(runtime) == [action_id]
    assert count(runtime, Action) == 1
    assert count(runtime, AuditEvent) == events_before


def test_a_replay_with_prefer_wait_of_a_finished_action_answers_at_once_and_runs_nothing(
    client: TestClient, runtime: Runtime, reader_key: str, target_server: TargetServer
) -> None:
    call = get_request(f"{target_server.base_url}/v1/charge")
    action_id = post(client, reader_key, call, "pay-wait").json()["id"]
    assert run_action(runtime, action_id) == "succeeded"

    again = post(client, reader_key, call, "pay-wait", Prefer="wait=60")

    assert again.status_code == 200
    assert again.json()["status"] == "succeeded"
    assert again.headers["idempotent-replayed"] == "true"
    assert len(target_server.received("/v1/charge")) == 1
    assert run_action(runtime, action_id) is None  # a finished action cannot be claimed again
    assert len(target_server.received("/v1/charge")) == 1


def test_a_replay_of_a_failed_action_is_200_with_the_failure(
    client: TestClient, runtime: Runtime, reader_key: str, target_server: TargetServer
) -> None:
    call = get_request(f"{target_server.base_url}/status/404")
    action_id = post(client, reader_key, call, "missing").json()["id"]
    assert run_action(runtime, action_id) == "failed"

    again = post(client, reader_key, call, "missing")

    assert again.status_code == 200
    assert again.json()["status"] == "failed"
    assert again.json()["result"]["response"]["status"] == 404
    assert len(target_server.received("/status/404")) == 1


def test_a_replay_of_a_queued_action_is_202_with_the_same_action(
    client: TestClient, runtime: Runtime, reader_key: str
) -> None:
    first = post(client, reader_key, get_request("http://127.0.0.1:9/queued"), "still-queued")
    again = post(client, reader_key, get_request("http://127.0.0.1:9/queued"), "still-queued")

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.json()["status"] == "queued"
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert published(runtime) == [first.json()["id"]]


def test_a_replay_of_a_cancelled_action_is_200_cancelled(client: TestClient, runtime: Runtime, reader_key: str) -> None:
    call = get_request("http://127.0.0.1:9/later")
    action_id = post(client, reader_key, call, "changed-my-mind").json()["id"]
    assert client.post(f"/v1/actions/{action_id}/cancel", headers=bearer(reader_key)).status_code == 200

    again = post(client, reader_key, call, "changed-my-mind")

    assert again.status_code == 200
    assert again.json()["status"] == "cancelled"
    assert again.headers["idempotent-replayed"] == "true"
    assert run_action(runtime, action_id) is None


def test_a_replay_of_a_denial_is_the_stored_403_document(client: TestClient, runtime: Runtime, reader_key: str) -> None:
    call = get_request("http://127.0.0.1:9/admin/users")
    first = post(client, reader_key, call, "denied")
    again = post(client, reader_key, call, "denied")

    assert first.status_code == again.status_code == 403
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json() == first.json()
    assert again.json()["type"].endswith("/denied-by-policy")
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == f"/v1/actions/{first.json()['action_id']}"
    assert published(runtime) == []


def test_a_replay_of_a_call_a_human_rejected_is_the_rejection_document(
    make_runtime: Callable[..., Runtime], target_server: TargetServer
) -> None:
    runtime = make_runtime(RecordingDispatcher(), admin_token=SecretStr(ADMIN_TOKEN))
    key = make_agent(runtime.db, "deployer", ["http-writer"])
    call = {"tool": "http.request", "args": {"method": "DELETE", "url": f"{target_server.base_url}/items/7"}}
    with TestClient(create_app(runtime=runtime)) as client:
        first = post(client, key, call, "delete-7")
        assert first.status_code == 202
        assert first.json()["status"] == "awaiting_approval"
        action_id = first.json()["id"]
        denied = client.post(
            f"/v1/admin/approvals/{action_id}/deny",
            json={"as": "user:lead@example.com", "reason": "not during the freeze"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert denied.status_code == 200, denied.text

        again = post(client, key, call, "delete-7")

    assert again.status_code == 403
    assert again.headers["content-type"] == "application/problem+json"
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == f"/v1/actions/{action_id}"
    problem = again.json()
    assert problem["type"].endswith("/rejected-by-approver")
    assert problem["detail"] == "user:lead@example.com rejected this call: not during the freeze"
    assert problem["action_id"] == action_id
    assert target_server.received() == []


def test_a_replay_of_a_deferred_action_is_202_with_not_before_and_retry_after(
    client: TestClient, runtime: Runtime, reader_key: str
) -> None:
    call = get_request("http://127.0.0.1:9/deferred")
    action_id = post(client, reader_key, call, "deferred").json()["id"]
    # As a closed send window or a spent budget leaves it (execution's own tests cover how).
    with runtime.db.session() as session:
        session.execute(
            update(Action)
            .where(col(Action.id) == action_id)
            .values(
                status="deferred", not_before=utcnow() + timedelta(hours=2), status_reason="outside the send window"
            )
        )

    again = post(client, reader_key, call, "deferred")

    assert again.status_code == 202
    assert again.json()["status"] == "deferred"
    assert again.json()["not_before"] is not None
    assert 7000 < int(again.headers["retry-after"]) <= 7200


@pytest.fixture
def statements(runtime: Runtime) -> Iterator[list[str]]:
    """Every SQL statement the runtime's engine sends, in order."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        seen.append(statement)

    event.listen(runtime.db.engine, "before_cursor_execute", record)
    yield seen
    event.remove(runtime.db.engine, "before_cursor_execute", record)


def test_a_replay_is_one_read_of_the_key_and_its_action(
    runtime: Runtime, reader_key: str, statements: list[str]
) -> None:
    with runtime.db.single_reads() as connection:
        agent = authenticate(connection, reader_key)
    assert agent is not None
    envelope = service.parse_envelope(get_request("http://127.0.0.1:9/once"))
    record = {"method": "POST", "path": "/v1/actions", "headers": {}, "body": "{}"}
    first = service.submit(runtime, agent, envelope, "read-once", record)
    statements.clear()

    again = service.submit(runtime, agent, envelope, "read-once", record)

    assert again.replayed
    assert again.action == first.action
    assert len(statements) == 1, statements
    [read] = statements
    assert read.lstrip().upper().startswith("SELECT")
    assert "idempotency_records" in read
    assert "actions" in read


def test_an_answer_stored_without_an_action_is_replayed_as_stored(runtime: Runtime, reader_key: str) -> None:
    with runtime.db.single_reads() as connection:
        agent = authenticate(connection, reader_key)
    assert agent is not None
    envelope = service.parse_envelope(get_request("http://127.0.0.1:9/no-action"))
    record = {"method": "POST", "path": "/v1/actions", "headers": {}, "body": "{}"}
    first = service.submit(runtime, agent, envelope, "no-action", record)
    # A stored answer that names no recorded action (what earlier versions could leave).
    stored = {"type": "about:blank", "title": "Stored", "status": 409, "detail": "as stored"}
    with runtime.db.session() as session:
        session.execute(
            update(IdempotencyRecord)
            .where(col(IdempotencyRecord.key) == "no-action")
            .values(action_id=None, response_status=409, response_body=stored)
        )

    again = service.submit(runtime, agent, envelope, "no-action", record)

    assert (again.status, again.body, again.replayed, again.action) == (409, stored, True, None)
    assert first.action_id is not None
