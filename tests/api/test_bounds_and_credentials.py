"""Numeric query parameters are bounded; who may read the policy; which credential a hint names."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.requests import Request

from outbox.api.errors import unhandled_handler
from outbox.runtime import Runtime
from tests.support.agents import bearer
from tests.support.dispatchers import RecordingDispatcher

ADMIN_TOKEN = "admin-token-for-bounds-tests-0123456789"
HUGE = str(10**30)  # beyond SQLite's 64-bit integers: this overflowed before the bounds


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(RecordingDispatcher(), admin_token=SecretStr(ADMIN_TOKEN))


def assert_422_naming(response, parameter: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert [e["field"] for e in problem["errors"]] == [f"query.{parameter}"]
    assert parameter in problem["detail"]
    assert "Idempotency-Key" not in problem["hint"]


@pytest.mark.parametrize("value", ["0", "101", "-1", HUGE, f"-{HUGE}", "1e3", "ten"])
def test_the_page_size_of_list_actions_is_bounded(client: TestClient, reader_key: str, value: str) -> None:
    assert_422_naming(client.get(f"/v1/actions?limit={value}", headers=bearer(reader_key)), "limit")


@pytest.mark.parametrize("value", ["0", "501", HUGE, "-5"])
def test_the_page_size_of_list_approvals_is_bounded(client: TestClient, value: str) -> None:
    assert_422_naming(client.get(f"/v1/admin/approvals?limit={value}", headers=bearer(ADMIN_TOKEN)), "limit")


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        (f"offset={HUGE}", "offset"),
        ("offset=1000001", "offset"),
        ("offset=-1", "offset"),
        (f"offset=-{HUGE}", "offset"),
        ("limit=1001", "limit"),
        ("limit=0", "limit"),
        (f"limit={HUGE}", "limit"),
    ],
)
def test_the_suppression_list_pages_are_bounded(client: TestClient, query: str, parameter: str) -> None:
    assert_422_naming(client.get(f"/v1/admin/mail/suppressions?{query}", headers=bearer(ADMIN_TOKEN)), parameter)


def test_the_largest_allowed_values_are_answered(client: TestClient, reader_key: str) -> None:
    assert client.get("/v1/actions?limit=100", headers=bearer(reader_key)).status_code == 200
    assert client.get("/v1/admin/approvals?limit=500", headers=bearer(ADMIN_TOKEN)).status_code == 200
    last_page = client.get("/v1/admin/mail/suppressions?offset=1000000&limit=1000", headers=bearer(ADMIN_TOKEN))
    assert last_page.status_code == 200, last_page.text
    assert last_page.json()["items"] == []


def test_every_numeric_query_parameter_in_the_api_has_both_bounds(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    numeric = [
        (path, parameter["name"], parameter["schema"])
        for path, operations in spec["paths"].items()
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
        if parameter["schema"].get("type") in ("integer", "number")
    ]
    assert {name for _, name, _ in numeric} >= {"limit", "offset"}
    for path, name, schema in numeric:
        assert "minimum" in schema and "maximum" in schema, (path, name, schema)


def test_the_policy_endpoint_needs_a_key_and_shows_where_the_policy_lives_only_to_admins(
    client: TestClient, runtime: Runtime, reader_key: str
) -> None:
    for headers in ({}, bearer("ob_not-a-key"), {"Authorization": "Basic YTpi"}):
        anonymous = client.get("/v1/policy", headers=headers)
        assert anonymous.status_code == 401
        assert anonymous.headers["content-type"] == "application/problem+json"
        assert str(runtime.settings.policy_dir) not in anonymous.text

    as_agent = client.get("/v1/policy", headers=bearer(reader_key))
    assert as_agent.status_code == 200
    assert as_agent.json()["version"] == runtime.policy.current.version
    assert "directory" not in as_agent.json()
    assert "git_commit" not in as_agent.json()
    assert str(runtime.settings.policy_dir) not in as_agent.text

    as_admin = client.get("/v1/policy", headers=bearer(ADMIN_TOKEN))
    assert as_admin.status_code == 200
    assert as_admin.json()["directory"] == runtime.policy.info().directory
    assert "git_commit" in as_admin.json()


def test_a_failed_reload_is_described_to_admins_only(client: TestClient, runtime: Runtime, reader_key: str) -> None:
    (runtime.settings.policy_dir / "rules.csv").write_text("p, broken\n")
    assert client.post("/v1/admin/policy/reload", headers=bearer(ADMIN_TOKEN)).status_code == 422

    agent_view = client.get("/v1/policy", headers=bearer(reader_key)).json()["last_reload_error"]
    admin_view = client.get("/v1/policy", headers=bearer(ADMIN_TOKEN)).json()["last_reload_error"]
    assert set(agent_view) == {"at"}
    assert "rules.csv" in admin_view["error"]


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "missing"),
        (bearer("wrong-admin-token-0123456789abcdef"), "wrong"),
        ({"Authorization": f"Token {ADMIN_TOKEN}"}, "missing"),
    ],
)
def test_admin_endpoints_hint_at_the_admin_token_not_at_agent_keys(
    client: TestClient, headers: dict[str, str], detail: str
) -> None:
    for method, path in (
        ("GET", "/v1/admin/approvals"),
        ("POST", "/v1/admin/policy/reload"),
        ("GET", "/v1/admin/mail"),
    ):
        response = client.request(method, path, headers=headers)
        assert response.status_code == 401, (path, response.text)
        problem = response.json()
        assert detail in problem["detail"]
        assert "OUTBOX_ADMIN_TOKEN" in problem["hint"]
        assert "outbox agents create" not in problem["hint"]
        assert "admin" in response.headers["www-authenticate"]


def test_an_agent_key_on_an_admin_endpoint_is_told_which_credential_it_takes(
    client: TestClient, reader_key: str
) -> None:
    response = client.get("/v1/admin/approvals", headers=bearer(reader_key))
    assert response.status_code == 401
    assert "not an agent key" in response.json()["hint"]
    assert "OUTBOX_ADMIN_TOKEN" in response.json()["hint"]


def test_agent_endpoints_still_hint_at_agent_keys(client: TestClient) -> None:
    response = client.get("/v1/actions", headers=bearer("ob_unknown"))
    assert response.status_code == 401
    assert "outbox agents create" in response.json()["hint"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/actions?status=exploded", None),
        ("GET", "/v1/actions?limit=0", None),
        ("POST", "/v1/admin/mail/pause", {"all": True, "agent": "x"}),
        ("POST", "/v1/admin/approvals/apr_x/deny", {"as": "user:a@example.com"}),
        ("POST", "/v1/admin/mail/suppressions", {"recipient": 5}),
    ],
)
def test_validation_errors_without_an_idempotency_key_do_not_mention_one(
    client: TestClient, reader_key: str, method: str, path: str, body: object
) -> None:
    key = ADMIN_TOKEN if "/admin/" in path else reader_key
    response = client.request(method, path, json=body, headers=bearer(key))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["hint"]
    assert "Idempotency-Key" not in problem["hint"]
    assert "Idempotency-Key" not in problem["detail"]


@pytest.mark.parametrize(
    ("method", "path", "mentions_key"),
    [("POST", "/v1/actions", True), ("GET", "/v1/actions", False), ("POST", "/v1/admin/mail/pause", False)],
)
def test_the_500_hint_mentions_the_idempotency_key_only_where_one_is_taken(
    method: str, path: str, mentions_key: bool
) -> None:
    request = Request({"type": "http", "method": method, "path": path, "headers": [], "query_string": b""})
    response = asyncio.run(unhandled_handler(request, RuntimeError("a bug")))
    hint = json.loads(bytes(response.body))["hint"]
    assert response.status_code == 500
    assert ("Idempotency-Key" in hint) is mentions_key
