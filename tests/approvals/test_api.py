"""The admin API for approvals, and what the agent sees over HTTP while a human decides."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from fastapi.testclient import TestClient

from outbox.runtime import Runtime
from tests.approvals.support import ADMIN_TOKEN, action_of, approval_of, client_for, deployer
from tests.support.agents import bearer
from tests.support.http_target import TargetServer

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def submit(client: TestClient, key: str, url: str, **extra: Any) -> Any:
    body = {"tool": "http.request", "args": {"method": "DELETE", "url": url}, **extra}
    headers = {**bearer(key), "Idempotency-Key": str(uuid.uuid4())}
    if "prefer" in extra:
        headers["Prefer"] = body.pop("prefer")
    return client.post("/v1/actions", json=body, headers=headers)


def test_admin_lists_shows_and_approves(gate_runtime: Runtime, target_server: TargetServer) -> None:
    key = deployer(gate_runtime)
    with client_for(gate_runtime) as client:
        created = submit(client, key, f"{target_server.base_url}/items/1", on_behalf_of="bob@example.com")
        assert created.status_code == 202
        assert created.json()["status"] == "awaiting_approval"
        action_id = created.json()["id"]

        listed = client.get("/v1/admin/approvals", headers=ADMIN)
        assert listed.status_code == 200
        [item] = listed.json()["items"]
        assert item["action_id"] == action_id
        # Stored and shown as the canonical principal.
        assert item["on_behalf_of"] == "user:bob@example.com"
        shown = client.get(f"/v1/admin/approvals/{item['id']}", headers=ADMIN).json()
        assert shown["digest"] == item["digest"]

        approved = client.post(
            f"/v1/admin/approvals/{item['id']}/approve",
            json={"as": "user:lead@example.com", "digest": item["digest"]},
            headers=ADMIN,
        )

        assert approved.status_code == 200, approved.text
        assert approved.json()["outcome"] == "approved"
        assert client.get(f"/v1/actions/{action_id}", headers=bearer(key)).json()["status"] == "queued"
        assert gate_runtime.dispatcher.published == [action_id]  # type: ignore[attr-defined]


def test_admin_endpoints_need_the_admin_token(gate_runtime: Runtime, target_server: TargetServer) -> None:
    key = deployer(gate_runtime)
    with client_for(gate_runtime) as client:
        action_id = submit(client, key, f"{target_server.base_url}/x").json()["id"]

        assert client.get("/v1/admin/approvals").status_code == 401
        assert client.get("/v1/admin/approvals", headers=bearer(key)).status_code == 401
        response = client.post(f"/v1/admin/approvals/{action_id}/approve", json={"as": "user:lead@example.com"})
        assert response.status_code == 401
    assert action_of(gate_runtime, action_id).status == "awaiting_approval"


def test_admin_refusals_are_problems(gate_runtime: Runtime, target_server: TargetServer) -> None:
    key = deployer(gate_runtime)
    with client_for(gate_runtime) as client:
        action_id = submit(client, key, f"{target_server.base_url}/x", on_behalf_of="oncall@example.com").json()["id"]

        own = client.post(
            f"/v1/admin/approvals/{action_id}/approve", json={"as": "user:oncall@example.com"}, headers=ADMIN
        )
        stranger = client.post(
            f"/v1/admin/approvals/{action_id}/deny",
            json={"as": "user:nobody@example.com", "reason": "no"},
            headers=ADMIN,
        )
        no_reason = client.post(
            f"/v1/admin/approvals/{action_id}/deny", json={"as": "user:lead@example.com"}, headers=ADMIN
        )
        missing = client.get("/v1/admin/approvals/apr_missing", headers=ADMIN)

        assert own.status_code == 403
        assert own.headers["content-type"] == "application/problem+json"
        assert own.json()["code"] == "self_approval"
        assert "another approver" in own.json()["hint"]
        assert stranger.status_code == 403 and stranger.json()["code"] == "not_authorized"
        assert no_reason.status_code == 422
        assert missing.status_code == 404

        client.post(
            f"/v1/admin/approvals/{action_id}/deny", json={"as": "user:lead@example.com", "reason": "no"}, headers=ADMIN
        )
        late = client.post(
            f"/v1/admin/approvals/{action_id}/approve", json={"as": "user:sre@example.com"}, headers=ADMIN
        )
        assert late.status_code == 409
        assert late.json()["code"] == "not_pending"


def test_the_agent_reads_a_denial_as_a_problem_with_the_reason_and_a_hint(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    key = deployer(gate_runtime)
    with client_for(gate_runtime) as client:
        action_id = submit(client, key, f"{target_server.base_url}/x").json()["id"]
        waiting = client.get(f"/v1/actions/{action_id}", headers=bearer(key)).json()
        assert waiting["status"] == "awaiting_approval"
        assert waiting["problem"] is None

        client.post(
            f"/v1/admin/approvals/{action_id}/deny",
            json={"as": "user:lead@example.com", "reason": "not during the freeze"},
            headers=ADMIN,
        )
        body = client.get(f"/v1/actions/{action_id}", headers=bearer(key)).json()

    assert body["status"] == "rejected"
    assert body["status_reason"] == "rejected by user:lead@example.com: not during the freeze"
    problem = body["problem"]
    assert problem["type"] == "https://agent-outbox.dev/problems/rejected-by-approver"
    assert problem["status"] == 403
    assert problem["detail"] == "user:lead@example.com rejected this call: not during the freeze"
    assert problem["action_id"] == action_id
    assert "do not resubmit" in problem["hint"]


def test_prefer_wait_returns_when_a_human_decides(gate_runtime: Runtime, target_server: TargetServer) -> None:
    key = deployer(gate_runtime)
    answers: list[Any] = []
    with client_for(gate_runtime) as client:

        def agent_waits() -> None:
            answers.append(submit(client, key, f"{target_server.base_url}/x", prefer="wait=20"))

        waiter = threading.Thread(target=agent_waits)
        started = time.monotonic()
        waiter.start()
        while True:
            pending = client.get("/v1/admin/approvals", headers=ADMIN).json()["items"]
            if pending:
                break
            time.sleep(0.02)
        client.post(
            f"/v1/admin/approvals/{pending[0]['id']}/deny",
            json={"as": "user:lead@example.com", "reason": "wrong item", "may_resubmit": True},
            headers=ADMIN,
        )
        waiter.join(20)

    [answer] = answers
    assert time.monotonic() - started < 10
    assert answer.headers["preference-applied"] == "wait=20"
    # The waiting agent gets the human's refusal as problem+json, reason and hint included.
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["detail"] == "user:lead@example.com rejected this call: wrong item"
    assert answer.json()["may_resubmit"] is True


def test_a_callback_url_must_be_http(gate_runtime: Runtime, target_server: TargetServer) -> None:
    key = deployer(gate_runtime)
    with client_for(gate_runtime) as client:
        bad = submit(client, key, f"{target_server.base_url}/x", callback_url="ftp://example.com/hook")
        userinfo = submit(client, key, f"{target_server.base_url}/x", callback_url="https://u:p@example.com/hook")
        # Policy decides callbacks (act `callback`); the shipped rules allow loopback /hooks/**.
        elsewhere = submit(client, key, f"{target_server.base_url}/x", callback_url="https://agent.example.com/hook")
        good = submit(client, key, f"{target_server.base_url}/x", callback_url="http://localhost:9/hooks/done")

    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "callback_url"
    assert userinfo.status_code == 422
    assert elsewhere.status_code == 422
    assert elsewhere.json()["errors"][0]["field"] == "callback_url"
    assert good.status_code == 202, good.text
    assert action_of(gate_runtime, good.json()["id"]).callback_url == "http://127.0.0.1:9/hooks/done"
    assert approval_of(gate_runtime, good.json()["id"]).status == "pending"


def test_a_broken_approvals_file_is_refused_and_the_running_policy_kept(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    running = gate_runtime.policy.current.version
    (gate_runtime.policy.current.snapshot.directory / "approvals.yaml").write_text("gates: [")
    ok, message = gate_runtime.policy.reload()
    assert not ok
    assert "approvals.yaml" in message
    assert gate_runtime.policy.current.version == running
    key = deployer(gate_runtime)
    with client_for(gate_runtime) as client:
        response = submit(client, key, f"{target_server.base_url}/x")
    # Still gated by the approvals configuration that was loaded before the broken edit.
    assert response.status_code == 202
    assert response.json()["status"] == "awaiting_approval"
