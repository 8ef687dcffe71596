"""Reading, listing and cancelling actions; waiting for outcomes with Prefer: wait."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from outbox.api.app import create_app
from outbox.execution.service import run_action
from outbox.runtime import Runtime
from tests.api.test_submit import get_request, post
from tests.support.agents import bearer, make_agent
from tests.support.http_target import TargetServer


def test_an_agent_sees_only_its_own_actions(client: TestClient, reader_key: str, writer_key: str) -> None:
    mine = post(client, reader_key, get_request("http://127.0.0.1:9/a"), "k1").json()["id"]

    assert client.get(f"/v1/actions/{mine}", headers=bearer(reader_key)).json()["id"] == mine
    other = client.get(f"/v1/actions/{mine}", headers=bearer(writer_key))
    assert other.status_code == 404
    assert other.json()["type"].endswith("/action-not-found")
    assert client.get("/v1/actions", headers=bearer(writer_key)).json()["items"] == []
    assert client.post(f"/v1/actions/{mine}/cancel", headers=bearer(writer_key)).status_code == 404


def test_list_filters_by_status_and_tool_and_pages_with_a_cursor(client: TestClient, reader_key: str) -> None:
    queued = [post(client, reader_key, get_request(f"http://127.0.0.1:9/q{n}"), f"q{n}").json()["id"] for n in range(5)]
    denied = post(client, reader_key, get_request("http://127.0.0.1:9/admin/x"), "d1").json()["action_id"]

    seen: list[str] = []
    url = "/v1/actions?status=queued&tool=http.request&limit=2"
    while url:
        page = client.get(url, headers=bearer(reader_key)).json()
        assert len(page["items"]) <= 2
        seen.extend(item["id"] for item in page["items"])
        url = page["links"].get("next")
    assert seen == list(reversed(queued))

    only_denied = client.get("/v1/actions?status=denied", headers=bearer(reader_key)).json()["items"]
    assert [a["id"] for a in only_denied] == [denied]
    assert client.get("/v1/actions?tool=email.send", headers=bearer(reader_key)).json()["items"] == []


def test_list_rejects_unknown_status_and_forged_cursor(client: TestClient, reader_key: str) -> None:
    bad_status = client.get("/v1/actions?status=exploded", headers=bearer(reader_key))
    bad_cursor = client.get("/v1/actions?cursor=%%%", headers=bearer(reader_key))
    bad_limit = client.get("/v1/actions?limit=100000", headers=bearer(reader_key))
    assert (bad_status.status_code, bad_cursor.status_code, bad_limit.status_code) == (422, 400, 422)
    assert bad_limit.json()["errors"][0]["field"] == "query.limit"


def test_cancel_a_queued_action_once(client: TestClient, reader_key: str) -> None:
    action_id = post(client, reader_key, get_request("http://127.0.0.1:9/c"), "c1").json()["id"]

    cancelled = client.post(f"/v1/actions/{action_id}/cancel", headers=bearer(reader_key))
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = client.post(f"/v1/actions/{action_id}/cancel", headers=bearer(reader_key))
    assert again.status_code == 409
    assert again.json()["action_id"] == action_id


def test_a_cancelled_action_is_never_executed(
    client: TestClient, runtime: Runtime, reader_key: str, target_server: TargetServer
) -> None:
    action_id = post(client, reader_key, get_request(f"{target_server.base_url}/never"), "c2").json()["id"]
    client.post(f"/v1/actions/{action_id}/cancel", headers=bearer(reader_key))

    assert run_action(runtime, action_id) is None
    assert target_server.received("/never") == []


def test_prefer_wait_returns_the_outcome(make_runtime: Callable[..., Runtime], target_server: TargetServer) -> None:
    from workers.embedded import EmbeddedDispatcher  # noqa: PLC0415 - the worker backend (Celery reads the settings at import) loads only in the tests that run it

    runtime = make_runtime(EmbeddedDispatcher())
    key = make_agent(runtime.db, "waiter", ["http-reader"])
    with TestClient(create_app(runtime=runtime)) as client:
        response = post(
            client, key, get_request(f"{target_server.base_url}/v1/ping"), "w1", Prefer="respond-async, wait=20"
        )
    assert response.status_code == 200
    assert response.headers["preference-applied"] == "wait=20"
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["result"]["response"]["status"] == 200
    assert len(target_server.received("/v1/ping")) == 1


def test_prefer_wait_gives_up_after_n_seconds(client: TestClient, reader_key: str) -> None:
    # The recording dispatcher never executes, so the action stays queued.
    response = post(client, reader_key, get_request("http://127.0.0.1:9/slow"), "w2", Prefer="wait=1")
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert response.headers["preference-applied"] == "wait=1"
