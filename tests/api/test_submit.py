"""POST /v1/actions: the agent contract, answer by answer."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import select

from outbox.actions.models import Action
from outbox.actions.service import seconds_until
from outbox.agents.service import authenticate, revoke_agent
from outbox.api.app import create_app
from outbox.execution.service import run_action
from outbox.idempotency.models import IdempotencyRecord
from outbox.idempotency.service import fingerprint
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from tests.support.agents import bearer, make_agent
from tests.support.dispatchers import RecordingDispatcher
from tests.support.send_window import MAIL_SETTINGS, closed_window_message, opening_day, write_closed_window_mail


def post(client: TestClient, key: str, body: object, idem: str | None = None, **headers: str):  # type: ignore[no-untyped-def]
    sent = {**bearer(key), **headers}
    if idem is not None:
        sent["Idempotency-Key"] = idem
    return client.post("/v1/actions", json=body, headers=sent)


def get_request(url: str) -> dict[str, object]:
    return {"tool": "http.request", "args": {"method": "GET", "url": url}}


def test_allowed_call_is_accepted_queued_and_published(client: TestClient, runtime: Runtime, reader_key: str) -> None:
    response = post(client, reader_key, get_request("http://127.0.0.1:9/v1/orders"), "k-1")

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert body["tool"] == "http.request"
    assert body["decision"]["effect"] == "allow"
    assert body["decision"]["rules"] == [
        {"rule": "p, role:http-reader, http:127.0.0.1:*/**, get|head, allow", "source": "rules.csv:9"}
    ]
    assert body["decision"]["policy_version"] == runtime.policy.current.version
    assert body["links"]["self"] == f"/v1/actions/{body['id']}"
    assert body["created_at"]
    assert response.headers["location"] == f"/v1/actions/{body['id']}"
    assert runtime.dispatcher.published == [body["id"]]  # type: ignore[attr-defined]


def test_the_request_is_recorded_exactly_as_received(client: TestClient, runtime: Runtime, reader_key: str) -> None:
    raw = '{"tool": "http.request",   "args": {"url": "http://127.0.0.1:9/x", "method": "get"}}'
    response = client.post(
        "/v1/actions",
        content=raw,
        headers={**bearer(reader_key), "Idempotency-Key": "exact", "Content-Type": "application/json"},
    )
    assert response.status_code == 202
    with runtime.db.session() as session:
        action = session.get(Action, response.json()["id"])
    assert action is not None
    assert action.request["body"] == raw
    assert "authorization" not in {h.lower() for h in action.request["headers"]}
    assert action.args == {"method": "GET", "url": "http://127.0.0.1:9/x"}


def test_denied_call_answers_403_problem_naming_the_rule_and_is_recorded(
    client: TestClient, runtime: Runtime, reader_key: str
) -> None:
    response = post(client, reader_key, get_request("http://127.0.0.1:9/admin/users"), "k-deny")

    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/denied-by-policy")
    assert problem["status"] == 403
    assert "rules.csv:12" in problem["detail"]
    assert problem["hint"]
    with runtime.db.session() as session:
        action = session.get(Action, problem["action_id"])
    assert action is not None
    assert action.status == "denied"
    assert runtime.dispatcher.published == []  # type: ignore[attr-defined]


def test_no_matching_rule_is_a_deny(client: TestClient, reader_key: str) -> None:
    response = post(client, reader_key, get_request("http://internal.example/v1/x"), "k-nomatch")
    assert response.status_code == 403
    assert "no rule allows it" in response.json()["detail"]


def test_approve_rule_puts_the_action_awaiting_approval(client: TestClient, writer_key: str) -> None:
    body = {"tool": "http.request", "args": {"method": "DELETE", "url": "http://127.0.0.1:9/v1/orders/7"}}
    response = post(client, writer_key, body, "k-approve")
    assert response.status_code == 202
    assert response.json()["status"] == "awaiting_approval"
    assert response.json()["decision"]["effect"] == "approve"


def test_missing_unknown_and_revoked_keys_are_401(client: TestClient, runtime: Runtime, reader_key: str) -> None:
    missing = client.post("/v1/actions", json={}, headers={"Idempotency-Key": "x"})
    unknown = post(client, "obx_not-a-real-key", {}, "x")
    assert missing.status_code == unknown.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["hint"]

    assert client.get("/v1/actions", headers=bearer(reader_key)).status_code == 200
    with runtime.db.session() as session:
        revoke_agent(session, "reader-bot", actor="test")
    revoked = client.get("/v1/actions", headers=bearer(reader_key))
    assert revoked.status_code == 401


def test_missing_or_invalid_idempotency_key_is_400(client: TestClient, reader_key: str) -> None:
    missing = post(client, reader_key, get_request("http://127.0.0.1:9/"))
    too_long = post(client, reader_key, get_request("http://127.0.0.1:9/"), "k" * 256)
    with_space = post(client, reader_key, get_request("http://127.0.0.1:9/"), "two words")
    assert [missing.status_code, too_long.status_code, with_space.status_code] == [400, 400, 400]
    assert missing.json()["type"].endswith("/idempotency-key-missing")
    assert too_long.json()["type"].endswith("/idempotency-key-invalid")


def test_same_key_same_request_answers_the_same_action_again(
    client: TestClient, runtime: Runtime, reader_key: str
) -> None:
    first = post(client, reader_key, get_request("http://127.0.0.1:9/a"), "k-replay")
    second = post(client, reader_key, get_request("http://127.0.0.1:9/a"), "k-replay")

    # Still queued, so the same 202 and action (tests/api/test_replay.py: after it changed).
    assert second.status_code == first.status_code == 202
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["location"] == first.headers["location"]
    assert "idempotent-replayed" not in first.headers
    with runtime.db.session() as session:
        assert len(session.exec(select(Action)).all()) == 1


def test_replay_of_a_denied_call_is_the_same_403(client: TestClient, reader_key: str) -> None:
    first = post(client, reader_key, get_request("http://127.0.0.1:9/admin"), "k-d")
    second = post(client, reader_key, get_request("http://127.0.0.1:9/admin"), "k-d")
    assert first.status_code == second.status_code == 403
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"


def test_same_key_different_request_is_422(client: TestClient, reader_key: str) -> None:
    post(client, reader_key, get_request("http://127.0.0.1:9/a"), "k-other")
    other = post(client, reader_key, get_request("http://127.0.0.1:9/b"), "k-other")
    assert other.status_code == 422
    assert other.json()["type"].endswith("/idempotency-key-reused")


def test_keys_are_scoped_per_agent(client: TestClient, reader_key: str, writer_key: str) -> None:
    a = post(client, reader_key, get_request("http://127.0.0.1:9/a"), "shared-key")
    b = post(client, writer_key, get_request("http://127.0.0.1:9/b"), "shared-key")
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]


def _processing_record(runtime: Runtime, reader_key: str, key: str, body: dict[str, Any], age: timedelta) -> None:
    """A `processing` record as earlier versions committed before doing the work."""
    with runtime.db.session() as session:
        agent = authenticate(session, reader_key)
        assert agent is not None
        session.add(
            IdempotencyRecord(
                agent_id=agent.id,
                key=key,
                fingerprint=fingerprint("http.request", body["args"], None),
                state="processing",
                created_at=utcnow() - age,
                expires_at=utcnow() + timedelta(hours=24),
            )
        )


def test_same_key_while_an_earlier_version_processes_it_is_409_with_retry_after(
    client: TestClient, runtime: Runtime, reader_key: str
) -> None:
    body = get_request("http://127.0.0.1:9/a")
    # A request of an earlier version that has claimed the key and not finished yet.
    _processing_record(runtime, reader_key, "k-busy", body, timedelta(seconds=5))

    response = post(client, reader_key, body, "k-busy")
    assert response.status_code == 409
    assert response.headers["retry-after"] == "1"
    assert response.json()["type"].endswith("/idempotency-key-in-progress")
    with runtime.db.session() as session:
        assert session.exec(select(Action)).all() == []


def test_a_key_abandoned_mid_way_by_an_earlier_version_is_taken_over(
    client: TestClient, runtime: Runtime, reader_key: str
) -> None:
    body = get_request("http://127.0.0.1:9/a")
    _processing_record(runtime, reader_key, "k-abandoned", body, timedelta(minutes=10))

    first = post(client, reader_key, body, "k-abandoned")
    again = post(client, reader_key, body, "k-abandoned")
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    with runtime.db.session() as session:
        assert len(session.exec(select(Action)).all()) == 1


def test_invalid_arguments_list_each_field_and_free_the_key(
    client: TestClient, runtime: Runtime, reader_key: str
) -> None:
    bad = {
        "tool": "http.request",
        "args": {"method": "TRACE", "url": "ftp://127.0.0.1/x", "headers": {"X-Ok": "a\r\nSet-Cookie: evil=1"}},
    }
    response = post(client, reader_key, bad, "k-fix")
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"args.method", "args.url", "args.headers"}
    with runtime.db.session() as session:
        assert session.exec(select(Action)).all() == []

    fixed = post(client, reader_key, get_request("http://127.0.0.1:9/ok"), "k-fix")
    assert fixed.status_code == 202


def test_agents_cannot_send_credentials_or_control_headers(client: TestClient, reader_key: str) -> None:
    for name in ("Authorization", "cookie", "Host", "Idempotency-Key", "Transfer-Encoding"):
        body = {"tool": "http.request", "args": {"method": "GET", "url": "http://127.0.0.1:9/", "headers": {name: "x"}}}
        response = post(client, reader_key, body, f"k-h-{name}")
        assert response.status_code == 422, name
        assert response.json()["errors"][0]["field"] == "args.headers"


def test_unknown_tool_is_422_with_the_list_of_tools(client: TestClient, reader_key: str) -> None:
    response = post(client, reader_key, {"tool": "shell.exec", "args": {"cmd": "rm -rf /"}}, "k-tool")
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "tool", "message": "unknown tool 'shell.exec'"}]
    assert "http.request" in response.json()["hint"]


def test_hostile_bodies_get_clear_4xx_never_500(client: TestClient, reader_key: str) -> None:
    cases: list[tuple[bytes, str, int]] = [
        (b"not json", "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        (b"[1, 2]", "application/json", 422),
        (b'{"tool": "http.request", "args": {}, "extra": 1}', "application/json", 422),
        (b'{"tool": "http.request", "args": {"url": "http://a/\\u0000"}}', "application/json", 422),
        (b'{"tool": "http.request\\r\\nX: y", "args": {}}', "application/json", 422),
        (b'{"tool": "http.request", "args": []}', "application/json", 422),
        (
            b'{"tool": "http.request", "args": {"method": "GET", "url": "http://127.0.0.1:9/../admin"}}',
            "application/json",
            422,
        ),
        (
            b'{"tool": "http.request", "args": {"method": "GET", "url": "http://u:p@127.0.0.1:9/"}}',
            "application/json",
            422,
        ),
        (b"tool=x", "application/x-www-form-urlencoded", 415),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400),
    ]
    for number, (raw, content_type, expected) in enumerate(cases):
        response = client.post(
            "/v1/actions",
            content=raw,
            headers={**bearer(reader_key), "Idempotency-Key": f"hostile-{number}", "Content-Type": content_type},
        )
        assert response.status_code == expected, (raw[:60], response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"]


def test_oversized_body_is_413(client: TestClient, runtime: Runtime, reader_key: str) -> None:
    huge = {"tool": "http.request", "args": {"method": "POST", "url": "http://127.0.0.1:9/", "json": "x" * 2_000_000}}
    response = post(client, reader_key, huge, "k-huge")
    assert response.status_code == 413
    assert response.json()["type"].endswith("/request-too-large")


def test_tools_are_listed_as_function_calling_definitions(client: TestClient, reader_key: str) -> None:
    response = client.get("/v1/tools", headers=bearer(reader_key))
    assert response.status_code == 200
    tools = {t["name"]: t for t in response.json()["tools"]}
    http = tools["http.request"]
    assert http["description"]
    assert http["parameters"]["type"] == "object"
    assert set(http["parameters"]["required"]) == {"method", "url"}
    assert "json" in http["parameters"]["properties"]
    assert http["parameters"]["additionalProperties"] is False
    assert http["function_name"] == "http__request"


def test_a_tool_may_be_called_by_its_function_name(client: TestClient, reader_key: str) -> None:
    response = post(
        client, reader_key, {"tool": "http__request", "args": {"method": "GET", "url": "http://127.0.0.1:9/"}}, "fn"
    )
    assert response.status_code == 202
    assert response.json()["tool"] == "http.request"


def test_health_readiness_and_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").json()["info"]["title"] == "agent-outbox"
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


def test_unique_keys_make_distinct_actions(client: TestClient, reader_key: str) -> None:
    ids = {
        post(client, reader_key, get_request("http://127.0.0.1:9/same"), str(uuid.uuid4())).json()["id"]
        for _ in range(3)
    }
    assert len(ids) == 3


def test_prefer_wait_answers_a_deferred_mail_at_once_with_not_before_and_retry_after(
    make_runtime: Callable[..., Runtime], policy_dir: Path, tmp_path: Path
) -> None:
    write_closed_window_mail(policy_dir, tmp_path)
    runtime = make_runtime(RecordingDispatcher(), **MAIL_SETTINGS)
    key = make_agent(runtime.db, "mailer-bot", ["mailer"])
    answers: list[Any] = []
    with TestClient(create_app(runtime=runtime)) as client:
        call = {"tool": "email.send", "args": closed_window_message()}
        waiter = threading.Thread(target=lambda: answers.append(post(client, key, call, "report", Prefer="wait=60")))
        waiter.start()
        while not runtime.dispatcher.published:  # type: ignore[attr-defined]
            time.sleep(0.01)
        [action_id] = runtime.dispatcher.published  # type: ignore[attr-defined]
        assert run_action(runtime, action_id) == "deferred"  # the send window is closed
        ran_at = time.monotonic()
        waiter.join(60)

    [answer] = answers
    # Answered once the mail was deferred, not after the full minute asked for.
    assert time.monotonic() - ran_at < 30
    assert answer.status_code == 202
    assert answer.headers["preference-applied"] == "wait=60"
    body = answer.json()
    assert body["status"] == "deferred"
    assert body["not_before"] == opening_day().isoformat().replace("+00:00", "Z")
    later = seconds_until(opening_day())
    assert later <= int(answer.headers["retry-after"]) <= later + 5
    assert answer.headers["location"] == f"/v1/actions/{action_id}"
