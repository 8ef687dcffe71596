"""`AsyncOutboxClient`: the same contract from asyncio code, against the same real outbox."""

from __future__ import annotations

import asyncio

import pytest

from outbox.client import AsyncOutboxClient, Denied, InvalidCall, Rejected, RetryPolicy, Unauthorized
from tests.client.conftest import OutboxServer
from tests.client.proxy import FaultyProxy
from tests.support.http_target import TargetServer

pytestmark = pytest.mark.slow


def test_the_main_paths(outbox_server: OutboxServer, target_server: TargetServer) -> None:
    key = outbox_server.agent("writer", "http-writer")

    async def scenario() -> None:
        async with AsyncOutboxClient(outbox_server.url, key) as outbox:
            done = await outbox.submit(
                "http.request", {"method": "POST", "url": f"{target_server.base_url}/async"}, wait=20
            )
            assert done.status == "succeeded"
            assert done.response is not None and done.response["status"] == 200

            with pytest.raises(Denied) as denied:
                await outbox.submit("http.request", {"method": "GET", "url": "http://127.0.0.1:9/admin/x"})
            assert denied.value.rules and denied.value.hint

            with pytest.raises(InvalidCall) as invalid:
                await outbox.submit("http.request", {"method": "GET"})
            assert invalid.value.fields == ["args.url"]

            pending = await outbox.submit("http.request", {"method": "DELETE", "url": "http://127.0.0.1:9/v1/a"})
            assert pending.status == "awaiting_approval"
            outbox_server.deny(pending.id, "not today")
            with pytest.raises(Rejected) as rejected:
                await outbox.wait(pending.id, timeout=10)
            assert rejected.value.reason == "not today"

            listed = [a.id async for a in outbox.actions(page_size=1)]
            assert listed == [pending.id, denied.value.action_id, done.id]
            assert (await outbox.get(done.id)).status == "succeeded"

            tools = await outbox.tools("anthropic")
            assert "http__request" in [t["name"] for t in tools]

        async with AsyncOutboxClient(outbox_server.url, "wrong") as outbox:
            with pytest.raises(Unauthorized):
                await outbox.get(done.id)

    asyncio.run(scenario())
    assert len(target_server.received("/async")) == 1


def test_a_lost_answer_is_retried_with_the_same_key_and_runs_once(
    proxy: FaultyProxy, outbox_server: OutboxServer, target_server: TargetServer
) -> None:
    key = outbox_server.agent("writer", "http-writer")
    proxy.retry_after = "0"
    proxy.script("503", "forward-then-drop")

    async def scenario() -> None:
        async with AsyncOutboxClient(proxy.url, key, retry=RetryPolicy(backoff=0.05)) as outbox:
            action = await outbox.submit(
                "http.request", {"method": "POST", "url": f"{target_server.base_url}/async-retry"}, wait=20
            )
        assert action.status == "succeeded"
        assert action.replayed is True

    asyncio.run(scenario())
    posts = proxy.posts()
    assert len(posts) == 3
    assert len({p.idempotency_key for p in posts}) == 1
    assert outbox_server.action_count() == 1
    assert len(target_server.received("/async-retry")) == 1
