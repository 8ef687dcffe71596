"""The OpenAPI document describes what the server really takes and answers."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.agents import bearer


@pytest.fixture
def spec(client: TestClient) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/openapi.json").json()
    return document


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


def test_the_actions_body_is_described_although_the_route_reads_it_itself(spec: dict[str, Any]) -> None:
    submit = spec["paths"]["/v1/actions"]["post"]
    body = submit["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ActionCreate"}
    action_create = spec["components"]["schemas"]["ActionCreate"]
    assert action_create["required"] == ["tool"]
    assert {"tool", "args", "on_behalf_of", "reason", "callback_url"} <= set(action_create["properties"])
    assert action_create["additionalProperties"] is False
    key = next(p for p in submit["parameters"] if p["name"] == "Idempotency-Key")
    assert key["required"] is True
    assert set(submit["responses"]) >= {"200", "202", "400", "401", "403", "409", "413", "415", "422"}


def test_each_operation_names_the_credential_it_takes(spec: dict[str, Any]) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert "OUTBOX_ADMIN_TOKEN" in schemes["adminToken"]["description"]
    assert "outbox agents create" in schemes["agentKey"]["description"]
    security = {(method, path): op["security"] for method, path, op in operations(spec)}
    assert security[("post", "/v1/actions")] == [{"agentKey": []}]
    assert security[("get", "/v1/policy")] == [{"agentKey": []}, {"adminToken": []}]
    assert security[("post", "/v1/admin/policy/reload")] == [{"adminToken": []}]
    assert security[("get", "/v1/admin/approvals")] == [{"adminToken": []}]
    assert security[("post", "/v1/mail/events")] == [{"mailEventsToken": []}]
    assert security[("get", "/healthz")] == []
    for (method, path), required in security.items():
        if path.startswith("/v1/admin/"):
            assert required == [{"adminToken": []}], (method, path)


def test_every_client_error_is_documented_as_a_problem(spec: dict[str, Any]) -> None:
    problem = spec["components"]["schemas"]["Problem"]
    assert problem["required"] == ["type", "title", "status", "detail"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for method, path, op in operations(spec):
        statuses = {int(s) for s in op["responses"]}
        assert 400 in statuses, (method, path)  # a NUL in the target, for every operation
        if op["security"]:
            assert 401 in statuses, (method, path)
        for status, response in op["responses"].items():
            if int(status) < 400:
                continue
            content = response["content"]
            if (method, path, status) == ("get", "/unsubscribe/{token}", "400"):
                assert set(content) == {"text/html"}  # a page for the person who clicked
                continue
            assert content == {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}, (
                method,
                path,
                status,
            )


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/actions", "GET, POST"),
        ("DELETE", "/v1/actions/act_123", "GET"),
        ("GET", "/v1/actions/act_123/cancel", "POST"),
        ("POST", "/v1/admin/approvals", "GET"),
        ("PUT", "/v1/admin/mail/suppressions", "GET, POST"),
    ],
)
def test_a_405_lists_every_method_of_the_resource(
    client: TestClient, reader_key: str, method: str, path: str, allowed: str
) -> None:
    response = client.request(method, path, headers=bearer(reader_key))
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.headers["content-type"] == "application/problem+json"
