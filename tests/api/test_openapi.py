"""The OpenAPI document describes what the server really takes and answers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from schemathesis.specs.openapi.definitions import OPENAPI_31

from outbox.api.app import create_app
from outbox.runtime import Runtime
from tests.support.agents import bearer
from tests.support.dispatchers import RecordingDispatcher

ADMIN_TOKEN = "admin-token-for-openapi-tests-0123456789"


@pytest.fixture
def spec(client: TestClient) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/openapi.json").json()
    return document


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


def validator_for(spec: dict[str, Any], component: str) -> jsonschema_rs.Validator:
    """A JSON Schema validator for one component; its `#/components/...` references resolve
    within the document's components, carried along in the root schema. Offline: nothing is fetched."""
    schema = {"$ref": f"#/components/schemas/{component}", "components": spec["components"]}
    return jsonschema_rs.Draft202012Validator(schema, offline=True)


def test_the_document_is_valid_openapi_3_1_and_each_schema_valid_json_schema(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1")
    jsonschema_rs.Draft202012Validator(OPENAPI_31, offline=True).validate(spec)
    for schema in spec["components"]["schemas"].values():
        jsonschema_rs.meta.validate({"$schema": "https://json-schema.org/draft/2020-12/schema", **schema})


def test_the_actions_body_is_one_schema_per_tool_of_the_running_policy(spec: dict[str, Any], runtime: Runtime) -> None:
    submit = spec["paths"]["/v1/actions"]["post"]
    body = submit["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ActionCreate"}
    schemas = spec["components"]["schemas"]
    action_create = schemas["ActionCreate"]
    tools = runtime.policy.current.tools
    mapping = action_create["discriminator"]["mapping"]
    assert action_create["discriminator"]["propertyName"] == "tool"
    assert set(mapping) == set(tools)
    assert action_create["oneOf"] == [{"$ref": ref} for ref in mapping.values()]
    assert mapping["http.request"] == "#/components/schemas/HttpRequestCall"
    assert mapping["k8s.scale_deployment"] == "#/components/schemas/K8sScaleDeploymentCall"
    for name, ref in mapping.items():
        call = schemas[ref.rsplit("/", 1)[1]]
        assert call["properties"]["tool"]["const"] == name
        assert "tool" in call["required"]
        assert call["additionalProperties"] is False
        assert {"on_behalf_of", "reason", "callback_url"} <= set(call["properties"])
        args = schemas[call["properties"]["args"]["$ref"].rsplit("/", 1)[1]]
        assert args == tools[name].args_schema()
        # `args` may be omitted only where the tool requires none (it defaults to {}).
        assert ("args" in call["required"]) == bool(args.get("required"))


def test_the_body_schema_accepts_what_the_server_accepts_and_refuses_what_it_refuses(
    spec: dict[str, Any], client: TestClient, writer_key: str
) -> None:
    validator = validator_for(spec, "ActionCreate")
    accepted: list[dict[str, Any]] = [
        {"tool": "http.request", "args": {"method": "GET", "url": "http://127.0.0.1:9/v1/orders"}},
        {
            "tool": "http.request",
            "args": {"method": "POST", "url": "http://127.0.0.1:9/v1/o", "json": [1]},
            "reason": "r",
        },
    ]
    refused: list[dict[str, Any]] = [
        {"tool": "http.request", "args": {"method": "BREW", "url": "http://127.0.0.1:9/"}},
        {"tool": "http.request", "args": {"url": "http://127.0.0.1:9/"}},
        {"tool": "http.request", "args": {"method": "GET", "url": "http://127.0.0.1:9/"}, "extra": 1},
        {"tool": "no.such_tool", "args": {}},
        {"tool": "terraform.plan", "args": {"stack": "moon"}},
    ]
    for number, body in enumerate(accepted):
        validator.validate(body)
        answer = client.post(
            "/v1/actions", json=body, headers={**bearer(writer_key), "Idempotency-Key": f"ok-{number}"}
        )
        assert answer.status_code == 202, answer.text
    for number, body in enumerate(refused):
        with pytest.raises(jsonschema_rs.ValidationError):
            validator.validate(body)
        answer = client.post(
            "/v1/actions", json=body, headers={**bearer(writer_key), "Idempotency-Key": f"no-{number}"}
        )
        assert answer.status_code == 422, answer.text
    example = spec["paths"]["/v1/actions"]["post"]["requestBody"]["content"]["application/json"]["example"]
    validator.validate(example)


def test_the_answers_of_a_submission_match_their_documented_schemas(
    spec: dict[str, Any], client: TestClient, writer_key: str
) -> None:
    submitted = client.post(
        "/v1/actions",
        json={"tool": "http.request", "args": {"method": "DELETE", "url": "http://127.0.0.1:9/v1/orders/7"}},
        headers={**bearer(writer_key), "Idempotency-Key": "awaiting"},
    )
    assert submitted.status_code == 202
    validator_for(spec, "ActionOut").validate(submitted.json())
    denied = client.post(
        "/v1/actions",
        json={"tool": "http.request", "args": {"method": "GET", "url": "http://127.0.0.1:9/admin/users"}},
        headers={**bearer(writer_key), "Idempotency-Key": "denied"},
    )
    assert denied.status_code == 403
    validator_for(spec, "Problem").validate(denied.json())
    assert denied.json()["decision"]["rules"]  # typed in the document as ActionDecisionOut


def test_an_action_waiting_for_a_human_links_to_its_approval(
    client: TestClient, runtime: Runtime, writer_key: str, reader_key: str
) -> None:
    awaiting = client.post(
        "/v1/actions",
        json={"tool": "http.request", "args": {"method": "DELETE", "url": "http://127.0.0.1:9/v1/orders/7"}},
        headers={**bearer(writer_key), "Idempotency-Key": "needs-a-human"},
    ).json()
    assert awaiting["links"]["approval"] == f"/v1/admin/approvals/{awaiting['id']}"
    allowed = client.post(
        "/v1/actions",
        json={"tool": "http.request", "args": {"method": "GET", "url": "http://127.0.0.1:9/v1/orders/7"}},
        headers={**bearer(reader_key), "Idempotency-Key": "no-human"},
    ).json()
    assert set(allowed["links"]) == {"self", "cancel"}
    read_back = client.get(awaiting["links"]["self"], headers=bearer(writer_key)).json()
    assert read_back["links"] == awaiting["links"]
    listed = client.get("/v1/actions", headers=bearer(writer_key)).json()["items"]
    assert [item["links"] for item in listed] == [awaiting["links"]]


def test_the_approval_link_opens_the_approval_with_the_admin_token(
    make_runtime: Callable[..., Runtime], writer_key: str
) -> None:
    runtime = make_runtime(RecordingDispatcher(), admin_token=SecretStr(ADMIN_TOKEN))
    with TestClient(create_app(runtime=runtime)) as admin_client:
        action = admin_client.post(
            "/v1/actions",
            json={"tool": "http.request", "args": {"method": "DELETE", "url": "http://127.0.0.1:9/v1/orders/8"}},
            headers={**bearer(writer_key), "Idempotency-Key": "link"},
        ).json()
        approval = admin_client.get(action["links"]["approval"], headers=bearer(ADMIN_TOKEN))
    assert approval.status_code == 200, approval.text
    assert approval.json()["action_id"] == action["id"]
    assert approval.json()["status"] == "pending"


def test_the_document_follows_the_policy_and_is_built_once_per_version(
    client: TestClient, runtime: Runtime, policy_dir: Path
) -> None:
    app: Any = client.app
    first = client.get("/openapi.json").json()
    assert app.openapi() is app.openapi()  # cached while the policy version stays
    assert "TerraformApplyCall" in first["components"]["schemas"]
    (policy_dir / "tools" / "terraform.yaml").unlink()
    assert runtime.policy.reload()[0]
    second = client.get("/openapi.json").json()
    schemas = second["components"]["schemas"]
    assert "TerraformApplyCall" not in schemas
    assert "terraform.apply" not in schemas["ActionCreate"]["discriminator"]["mapping"]
    assert "HttpRequestCall" in schemas


def test_submission_headers_and_statuses_are_documented(spec: dict[str, Any]) -> None:
    submit = spec["paths"]["/v1/actions"]["post"]
    key = next(p for p in submit["parameters"] if p["name"] == "Idempotency-Key")
    assert key["in"] == "header"
    assert key["required"] is True
    assert key["schema"]["type"] == "string"
    prefer = next(p for p in submit["parameters"] if p["name"] == "Prefer")
    assert prefer["required"] is False
    responses = submit["responses"]
    assert set(responses) >= {"200", "202", "400", "401", "403", "409", "413", "415", "422", "503"}
    for status in ("200", "202"):
        assert responses[status]["content"] == {
            "application/json": {"schema": {"$ref": "#/components/schemas/ActionOut"}}
        }
    for status in ("200", "202", "403"):
        assert {"Location", "Idempotent-Replayed"} <= set(responses[status]["headers"]), status
    for status in ("202", "409", "503"):
        assert responses[status]["headers"]["Retry-After"]["schema"]["type"] == "integer", status
    for headers in (r.get("headers", {}) for r in responses.values()):
        assert all(header.get("required", False) is False for header in headers.values())


def test_each_operation_names_the_credential_it_takes(spec: dict[str, Any]) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert schemes["agentKey"]["scheme"] == schemes["adminToken"]["scheme"] == "bearer"
    assert "OUTBOX_ADMIN_TOKEN" in schemes["adminToken"]["description"]
    assert "outbox agents create" in schemes["agentKey"]["description"]
    security = {(method, path): op["security"] for method, path, op in operations(spec)}
    for (method, path), required in security.items():
        if path.startswith("/v1/admin/"):
            assert required == [{"adminToken": []}], (method, path)
        elif path.startswith(("/v1/actions", "/v1/tools")):
            assert required == [{"agentKey": []}], (method, path)
        for requirement in required:
            assert set(requirement) <= set(schemes), (method, path)
    assert security[("get", "/v1/policy")] == [{"agentKey": []}, {"adminToken": []}]
    assert security[("post", "/v1/mail/events")] == [{"mailEventsToken": []}]
    assert security[("get", "/healthz")] == []
    assert security[("post", "/slack/interactions")] == []  # signed by Slack, not a bearer token


def test_every_client_error_is_documented_as_a_problem(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    problem = schemas["Problem"]
    assert problem["required"] == ["type", "title", "status", "detail"]
    assert problem["properties"]["decision"]["$ref"] == "#/components/schemas/ActionDecisionOut"
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
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


def test_schema_and_operation_names_are_clean(spec: dict[str, Any]) -> None:
    names = list(spec["components"]["schemas"])
    unclean = [n for n in names if "__" in n or n.startswith("Body_") or re.search(r"-(Input|Output)$", n)]
    assert unclean == []
    assert all(re.fullmatch(r"[A-Z][A-Za-z0-9]*", n) for n in names), names
    assert {"ActionDecisionOut", "DecisionOut", "ActionLinks", "ActionStatus"} <= set(names)
    operation_ids = [op["operationId"] for _, _, op in operations(spec)]
    assert len(operation_ids) == len(set(operation_ids))
    assert {"submit_action", "read_action", "list_actions", "cancel_action"} <= set(operation_ids)
    inline_titles = [
        media["schema"]["title"]
        for _, _, op in operations(spec)
        for response in op["responses"].values()
        for media in response.get("content", {}).values()
        if "title" in media["schema"]
    ]
    assert inline_titles == []
    # Every reference resolves.
    text = json.dumps(spec)
    for ref in set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', text)):
        assert ref in spec["components"]["schemas"], ref


def test_a_document_built_before_startup_has_the_generic_body(runtime: Runtime) -> None:
    app = create_app(runtime=runtime)  # not started: no runtime on app.state, so no tools
    action_create = app.openapi()["components"]["schemas"]["ActionCreate"]
    assert action_create["required"] == ["tool"]
    assert action_create["properties"]["args"]["type"] == "object"
    assert action_create["additionalProperties"] is False


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


def test_the_status_filter_of_the_action_list_names_the_statuses(
    spec: dict[str, Any], client: TestClient, reader_key: str
) -> None:
    listing = spec["paths"]["/v1/actions"]["get"]
    status = next(p for p in listing["parameters"] if p["name"] == "status")
    assert status["schema"] == {"$ref": "#/components/schemas/ActionStatus"}
    statuses = spec["components"]["schemas"]["ActionStatus"]["enum"]
    assert {"queued", "succeeded", "awaiting_approval", "denied"} <= set(statuses)
    for value in statuses:
        assert client.get(f"/v1/actions?status={value}", headers=bearer(reader_key)).status_code == 200
    assert client.get("/v1/actions?status=done", headers=bearer(reader_key)).status_code == 422
