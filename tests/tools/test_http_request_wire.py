"""`http.request` on the wire: the backend receives exactly the path policy decided.

A real HTTP server on loopback records the request target it receives; the action records the
policy object it was decided on. For every spelling an agent may use, the two agree, and the
spellings that cannot be made to agree are refused at submission with a 422 naming `args.url`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from outbox.actions.models import Action
from outbox.api.app import create_app
from outbox.execution.service import run_action
from outbox.runtime import Runtime
from outbox.urls import parse_url
from tests.support.agents import bearer, make_agent
from tests.support.calls import load, submit_call
from tests.support.http_target import TargetServer


@pytest.fixture
def key(runtime: Runtime) -> str:
    return make_agent(runtime.db, "wire-test", ["http-writer"])


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime=runtime), raise_server_exceptions=False) as test_client:
        yield test_client


# `{base}` is http://<a name of the loopback host>:<port>; each entry is (URL as the agent writes
# it, the request target the backend must receive).
SPELLINGS = [
    ("http://127.0.0.1:{port}/v1/orders?limit=5", "/v1/orders?limit=5"),
    ("http://localhost:{port}/v1/orders", "/v1/orders"),
    ("http://LOCALHOST.:{port}/v1/orders", "/v1/orders"),
    ("http://api.localhost:{port}/v1/orders", "/v1/orders"),
    # The target server listens on IPv4 only: these reach it only because [::1] is 127.0.0.1.
    ("http://[::1]:{port}/v1/orders", "/v1/orders"),
    ("http://[0:0:0:0:0:0:0:1]:{port}/v1/orders", "/v1/orders"),
    ("http://[::ffff:127.0.0.1]:{port}/v1/orders", "/v1/orders"),
    ("http://127.0.0.1:{port}/%61pi/%7euser", "/api/~user"),
    ("http://127.0.0.1:{port}/a%3fb/c%2bd", "/a%3Fb/c%2Bd"),
    ("http://127.0.0.1:{port}/items/{{id}}/x|y", "/items/%7Bid%7D/x%7Cy"),
    ('http://127.0.0.1:{port}/q"<>', "/q%22%3C%3E"),
    ("http://127.0.0.1:{port}/search?q=é&next=/admin/users&x=%2f", "/search?q=%C3%A9&next=/admin/users&x=%2F"),
    ("http://127.0.0.1:{port}/discount/50%25", "/discount/50%25"),
    ("http://127.0.0.1:{port}/trailing/", "/trailing/"),
    ("http://127.0.0.1:{port}", "/"),
]


def test_the_backend_receives_exactly_the_path_in_the_policy_object(
    runtime: Runtime, key: str, target_server: TargetServer
) -> None:
    port = target_server.port
    for written, received in SPELLINGS:
        url = written.format(port=port)
        target_server.requests.clear()
        action_id = submit_call(runtime, key, "http.request", {"method": "GET", "url": url})

        assert run_action(runtime, action_id) == "succeeded", url

        [request] = target_server.requests
        assert request.path == received, url
        assert request.headers["host"] == f"127.0.0.1:{port}", url
        action = load(runtime, action_id)
        path = received.split("?", maxsplit=1)[0]
        assert action.targets == [{"object": f"http:127.0.0.1:{port}{path}", "act": "get", "effect": "allow"}], url
        assert action.args["url"] == f"http://127.0.0.1:{port}{received}", url
        assert action.artifact is not None
        assert action.artifact["url"] == action.args["url"], url


ADMIN_SPELLINGS = [
    "http://localhost:{port}/admin/users",
    "http://[::1]:{port}/admin/users",
    "http://LOCALHOST.:{port}/admin/users",
    "http://[::ffff:127.0.0.1]:{port}/admin/users",
    "http://127.0.0.1:{port}/%61dmin/users",
    "http://127.0.0.1:{port}/%61%64%6D%69%6E/%75sers",
]


def test_the_admin_deny_holds_under_every_spelling_and_nothing_is_sent(
    runtime: Runtime, target_server: TargetServer
) -> None:
    reader = make_agent(runtime.db, "reader", ["http-reader"])
    for written in ADMIN_SPELLINGS:
        url = written.format(port=target_server.port)
        action_id = submit_call(runtime, reader, "http.request", {"method": "GET", "url": url})

        action = load(runtime, action_id)
        assert action.status == "denied", url
        assert action.targets[0]["object"] == f"http:127.0.0.1:{target_server.port}/admin/users", url
        assert run_action(runtime, action_id) is None
    assert target_server.requests == []


def test_headers_that_would_retarget_the_request_never_reach_the_backend(
    client: TestClient, key: str, target_server: TargetServer
) -> None:
    for name in ["X-Original-URL", "X-Rewrite-URL", "X-Forwarded-Host", "X_Forwarded_Prefix", "Forwarded"]:
        response = client.post(
            "/v1/actions",
            json={
                "tool": "http.request",
                "args": {"method": "GET", "url": f"{target_server.base_url}/orders", "headers": {name: "/admin/users"}},
            },
            headers={**bearer(key), "Idempotency-Key": str(uuid.uuid4())},
        )
        assert response.status_code == 422, name
        assert response.json()["errors"][0]["field"] == "args.headers"
    assert target_server.requests == []


AMBIGUOUS = [
    "http://127.0.0.1:{port}//admin/users",
    "http://127.0.0.1:{port}/orders//admin",
    "http://127.0.0.1:{port}/admin;x=1/users",
    "http://127.0.0.1:{port}/admin;/users",
    "http://127.0.0.1:{port}/orders/../admin/users",
    "http://127.0.0.1:{port}/orders/%2e%2e/admin/users",
    "http://127.0.0.1:{port}/orders/%252e%252e/admin/users",
    "http://127.0.0.1:{port}/admin%2fusers",
    "http://127.0.0.1:{port}/orders\\..\\admin",
    "http://127.1:{port}/admin/users",
    "http://2130706433:{port}/admin/users",
    "http://0x7f.0.0.1:{port}/admin/users",
    "http://0.0.0.0:{port}/admin/users",
    "http://127.0.0.1:{port}/ａdmin/users",
    "http://user:pw@127.0.0.1:{port}/orders",
    "http://127.0.0.1:{port}/orders#/admin",
]


def test_ambiguous_urls_are_refused_at_submission_with_a_problem_naming_args_url(
    runtime: Runtime, client: TestClient, key: str, target_server: TargetServer
) -> None:
    for written in AMBIGUOUS:
        url = written.format(port=target_server.port)
        response = client.post(
            "/v1/actions",
            json={"tool": "http.request", "args": {"method": "GET", "url": url}},
            headers={**bearer(key), "Idempotency-Key": str(uuid.uuid4())},
        )

        assert response.status_code == 422, url
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert [e["field"] for e in problem["errors"]] == ["args.url"], url
        assert problem["errors"][0]["message"]
        assert problem["hint"]
    with runtime.db.session() as session:
        assert session.exec(select(Action)).all() == []
    assert target_server.requests == []


def test_the_wire_form_is_what_httpx_puts_on_the_request_line(target_server: TargetServer) -> None:
    """The tool refuses to send when the HTTP client would alter the canonical form; this shows the
    check has nothing to catch for the canonical forms above."""
    for written, received in SPELLINGS:
        url = parse_url(written.format(port=target_server.port))
        assert httpx.URL(url.wire).raw_path.decode("ascii") == received
