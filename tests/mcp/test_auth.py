"""Agent API keys on every MCP request; RFC 9728 tells a client where to learn how."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from outbox.agents.service import revoke_agent
from outbox.mcp.auth import METADATA_PATH
from tests.mcp.conftest import RunningOutbox, mcp_client
from tests.mcp.test_server import discover


def challenge_url(header: str) -> str:
    match = re.search(r'resource_metadata="([^"]+)"', header)
    assert match is not None, header
    return match.group(1)


def test_a_request_without_a_key_gets_401_pointing_to_the_protected_resource_metadata(outbox: RunningOutbox) -> None:
    refused = discover(outbox, {})

    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    challenge = refused.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    # RFC 6750 §3.1: no error code when no credentials were sent.
    assert "error=" not in challenge
    assert challenge_url(challenge) == f"{outbox.url}{METADATA_PATH}"
    assert "outbox agents create" in refused.json()["hint"]

    metadata = httpx.get(challenge_url(challenge), timeout=10)
    assert metadata.status_code == 200
    document = metadata.json()
    # RFC 9728 §3.3: the resource is the URL the client used, before the well-known suffix.
    assert document["resource"] == outbox.mcp_url
    assert document["bearer_methods_supported"] == ["header"]
    # No authorization server issues these keys: none is named.
    assert "authorization_servers" not in document


def test_an_unknown_key_gets_401_with_invalid_token(outbox: RunningOutbox) -> None:
    refused = discover(outbox, {"Authorization": "Bearer obx_not-a-key-this-server-issued"})

    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert challenge_url(refused.headers["www-authenticate"]) == f"{outbox.url}{METADATA_PATH}"


def test_the_metadata_names_the_public_base_url_when_one_is_configured(
    make_outbox: Callable[..., RunningOutbox],
) -> None:
    outbox = make_outbox(public_base_url="https://outbox.example.com/")

    refused = discover(outbox, {})
    metadata = httpx.get(f"{outbox.url}{METADATA_PATH}", timeout=10).json()

    expected = f"https://outbox.example.com{METADATA_PATH}"
    assert challenge_url(refused.headers["www-authenticate"]) == expected
    assert metadata["resource"] == "https://outbox.example.com/mcp"


def test_the_sdk_client_with_the_key_in_the_authorization_header_connects(outbox: RunningOutbox) -> None:
    key = outbox.agent("reader", "http-reader")

    async def scenario() -> int:
        async with mcp_client(outbox.mcp_url, key) as client:
            return len((await client.list_tools()).tools)

    assert asyncio.run(scenario()) == 1


def test_a_revoked_key_stops_working_on_the_next_request(outbox: RunningOutbox) -> None:
    key = outbox.agent("soon-gone", "http-reader")

    async def scenario() -> None:
        async with mcp_client(outbox.mcp_url, key) as client:
            assert len((await client.list_tools()).tools) == 1
            with outbox.runtime.db.session() as session:
                revoke_agent(session, "soon-gone", actor="test")
            # The same client, the next request: refused, no cached identity.
            with pytest.raises(MCPError):
                await client.list_tools()

    asyncio.run(scenario())
    refused = discover(outbox, {"Authorization": f"Bearer {key}"})
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
