"""Bearer credentials are read one way (FastAPI's HTTPBearer) for every credential the API takes.

Each credential gets the same hostile headers: absent, another scheme, the scheme alone, a token
of blanks, a token one character off, a prefix of it, a non-ASCII and a very long token. Every
refusal is a problem+json 401 with a WWW-Authenticate challenge; the agent and admin answers keep
their hints (the admin hint names OUTBOX_ADMIN_TOKEN). The valid token is accepted in any case of
the scheme and with surrounding blanks, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from outbox.api.app import create_app
from outbox.api.security import SCHEMES
from outbox.runtime import Runtime
from tests.support.agents import make_agent
from tests.support.dispatchers import RecordingDispatcher

ADMIN_TOKEN = "admin-token-for-bearer-tests-0123456789"
EVENTS_TOKEN = "mail-events-token-for-bearer-tests-0123"
METRICS_TOKEN = "metrics-token-for-bearer-tests-0123456"


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(
        RecordingDispatcher(), admin_token=SecretStr(ADMIN_TOKEN), mail_events_token=SecretStr(EVENTS_TOKEN)
    )


@pytest.fixture
def client(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("OUTBOX_METRICS_TOKEN", METRICS_TOKEN)
    with TestClient(create_app(runtime=runtime), raise_server_exceptions=False) as test_client:
        yield test_client


def hostile_headers(token: str) -> list[dict[str, str | bytes]]:
    return [
        {},
        {"Authorization": ""},
        {"Authorization": f"Basic {token}"},
        {"Authorization": f"Token {token}"},
        {"Authorization": f"Bearer{token}"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer    "},
        {"Authorization": f"Bearer {token}x"},
        {"Authorization": f"Bearer {token[:-1]}"},
        {"Authorization": f"Bearer {token.upper()}"},
        {"Authorization": f"Bearer {token} {token}"},
        {"Authorization": "Bearer é€".encode()},  # UTF-8 bytes, read by the server as Latin-1
        {"Authorization": "Bearer " + "k" * 8192},
    ]


def valid_headers(token: str) -> list[dict[str, str | bytes]]:
    return [
        {"Authorization": f"Bearer {token}"},
        {"Authorization": f"bearer {token}"},
        {"Authorization": f"BEARER {token}"},
        {"Authorization": f"Bearer   {token}  "},
    ]


# (method, path, body) of one endpoint per credential; `None` body means no body.
AGENT = ("GET", "/v1/actions", None)
ADMIN = ("GET", "/v1/admin/approvals", None)
EVENTS = ("POST", "/v1/mail/events", {"events": []})
METRICS = ("GET", "/metrics", None)


def call(client: TestClient, endpoint: tuple[str, str, object], headers: dict[str, str | bytes]) -> Any:
    method, path, body = endpoint
    if body is None:
        return client.request(method, path, headers=headers)
    return client.request(method, path, headers=headers, json=body)


def refusals(client: TestClient, endpoint: tuple[str, str, object], token: str) -> Iterator[dict[str, object]]:
    for headers in hostile_headers(token):
        response = call(client, endpoint, headers)
        assert response.status_code == 401, (headers.get("Authorization", "")[:40], response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith("Bearer realm=")
        yield response.json()


def test_an_agent_key_is_refused_in_every_wrong_form_with_the_agent_hint(runtime: Runtime, client: TestClient) -> None:
    key = make_agent(runtime.db, "bearer-bot", ["http-reader"])
    for problem in refusals(client, AGENT, key):
        assert problem["type"] == "https://agent-outbox.dev/problems/unauthorized"
        assert "outbox agents create" in str(problem["hint"])
    for headers in valid_headers(key):
        assert call(client, AGENT, headers).status_code == 200


def test_the_admin_token_is_refused_in_every_wrong_form_with_the_admin_hint(client: TestClient) -> None:
    for problem in refusals(client, ADMIN, ADMIN_TOKEN):
        assert "OUTBOX_ADMIN_TOKEN" in str(problem["hint"])
    for headers in valid_headers(ADMIN_TOKEN):
        assert call(client, ADMIN, headers).status_code == 200


def test_the_mail_events_token_is_refused_in_every_wrong_form(client: TestClient) -> None:
    for problem in refusals(client, EVENTS, EVENTS_TOKEN):
        assert problem["detail"] == "The mail events token is missing or wrong."
    for headers in valid_headers(EVENTS_TOKEN):
        # Past the credential, the (empty) body is what is refused.
        response = call(client, EVENTS, headers)
        assert response.status_code == 422
        assert response.json()["type"] == "https://agent-outbox.dev/problems/validation-error"


def test_the_metrics_token_is_refused_in_every_wrong_form(client: TestClient) -> None:
    for problem in refusals(client, METRICS, METRICS_TOKEN):
        assert "OUTBOX_METRICS_TOKEN" in str(problem["hint"])
    for headers in valid_headers(METRICS_TOKEN):
        assert call(client, METRICS, headers).status_code == 200


def test_an_agent_key_does_not_open_admin_endpoints_nor_the_admin_token_agent_ones(
    runtime: Runtime, client: TestClient
) -> None:
    key = make_agent(runtime.db, "bearer-bot", ["http-reader"])
    assert call(client, ADMIN, {"Authorization": f"Bearer {key}"}).status_code == 401
    assert call(client, AGENT, {"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 401
    assert call(client, EVENTS, {"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 401


def test_the_openapi_document_describes_each_scheme_from_the_one_definition(client: TestClient) -> None:
    schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
    documented = {s.scheme_name for s in SCHEMES} - {"metricsToken"}  # /metrics is not in the document
    assert set(schemes) == documented
    for scheme in SCHEMES:
        if scheme.scheme_name in schemes:
            assert schemes[scheme.scheme_name] == {
                "type": "http",
                "scheme": "bearer",
                "description": scheme.model.description,
            }
