"""Request ids, request context on every log line, and HTTP metrics by route template."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

from outbox import metrics
from outbox.runtime import Runtime
from tests.deploy.conftest import JsonLines
from tests.support.agents import bearer, make_agent


def test_a_sane_request_id_is_kept_and_returned(client: TestClient) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "trace-7f3a:1"})
    assert response.headers["x-request-id"] == "trace-7f3a:1"


def test_a_missing_or_unsafe_request_id_is_replaced(client: TestClient) -> None:
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    replaced = client.get("/healthz", headers={"X-Request-ID": "x" * 500}).headers["x-request-id"]
    assert replaced != "x" * 500 and len(replaced) == 32
    assert client.get("/healthz").headers["x-request-id"] != generated


def test_log_lines_carry_request_id_agent_and_action_and_never_the_key(
    client: TestClient, runtime: Runtime, json_logs: JsonLines
) -> None:
    key = make_agent(runtime.db, "ctx-bot", ["http-reader"])
    json_logs()

    response = client.post(
        "/v1/actions",
        json={"tool": "http.request", "args": {"method": "GET", "url": "http://127.0.0.1:9/x"}},
        headers={**bearer(key), "Idempotency-Key": str(uuid.uuid4()), "X-Request-ID": "req-ctx-1"},
    )
    assert response.status_code == 202

    lines = json_logs()
    access = [line for line in lines if line["event"] == "http.request" and line.get("request_id") == "req-ctx-1"]
    assert len(access) == 1
    assert access[0]["agent"] == "ctx-bot"
    assert access[0]["action_id"] == response.json()["id"]
    assert access[0]["tool"] == "http.request"
    assert access[0]["status"] == 202
    assert access[0]["method"] == "POST" and access[0]["path"] == "/v1/actions"
    assert all(key not in str(line) for line in lines)


def test_an_unauthenticated_request_is_logged_without_an_agent(client: TestClient, json_logs: JsonLines) -> None:
    client.get("/v1/tools", headers={"X-Request-ID": "req-anon"})
    (access,) = [line for line in json_logs() if line.get("request_id") == "req-anon"]
    assert access["status"] == 401
    assert "agent" not in access


def test_health_checks_are_counted_but_not_logged(client: TestClient, json_logs: JsonLines) -> None:
    before = (
        metrics.REGISTRY.get_sample_value(
            "outbox_http_requests_total", {"method": "GET", "route": "/healthz", "status": "200"}
        )
        or 0.0
    )
    client.get("/healthz", headers={"X-Request-ID": "req-probe"})
    assert not [line for line in json_logs() if line.get("request_id") == "req-probe"]
    after = metrics.REGISTRY.get_sample_value(
        "outbox_http_requests_total", {"method": "GET", "route": "/healthz", "status": "200"}
    )
    assert after == before + 1


def test_http_metrics_use_route_templates_not_raw_paths(client: TestClient, runtime: Runtime) -> None:
    key = make_agent(runtime.db, "route-bot", ["http-reader"])
    client.get("/v1/actions/act_doesnotexist", headers=bearer(key))
    client.get("/no/such/path/" + uuid.uuid4().hex)
    text = client.get("/metrics").text
    assert 'route="/v1/actions/{action_id}",status="404"' in text
    assert 'route="unmatched"' in text
    assert "act_doesnotexist" not in text
