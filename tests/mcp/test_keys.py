"""A blind retry never executes twice; a call made twice on purpose does (a new `_meta` key)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import mcp_types as types
import pytest
from sqlalchemy import update
from sqlmodel import col

from outbox.actions.models import Action
from outbox.actions.service import parse_envelope, submit
from outbox.agents.service import AuthenticatedAgent, authenticate
from outbox.mcp import keys
from outbox.mcp.schemas import IDEMPOTENCY_KEY_META, ON_BEHALF_OF_META, REPLAYED_META
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from tests.mcp.conftest import RunningOutbox, mcp_client, text_of
from tests.support.agents import make_agent
from tests.support.http_target import TargetServer


def calls(
    outbox: RunningOutbox, key: str, requests: list[tuple[dict[str, Any], dict[str, Any] | None]]
) -> list[types.CallToolResult]:
    """Each (arguments, _meta) as its own tools/call, one after the other, as a retrying client
    sends them: a new JSON-RPC request each time, nothing else in common."""

    async def scenario() -> list[types.CallToolResult]:
        results = []
        for arguments, meta in requests:
            async with mcp_client(outbox.mcp_url, key) as client:
                results.append(await client.call_tool("http__request", arguments, meta=meta))  # type: ignore[arg-type]
        return results

    return asyncio.run(scenario())


def post(target_server: TargetServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"method": "POST", "url": f"{target_server.base_url}{path}", "json": body}


def action_ids(results: list[types.CallToolResult]) -> list[str]:
    ids = []
    for result in results:
        assert result.structured_content is not None, text_of(result)
        ids.append(result.structured_content["id"])
    return ids


def test_a_retried_call_without_a_key_executes_once(outbox: RunningOutbox, target_server: TargetServer) -> None:
    key = outbox.agent("writer", "http-writer")
    charge = post(target_server, "/charge", {"amount": 10})

    first, retry = calls(outbox, key, [(charge, None), (charge, None)])

    assert action_ids([first, retry])[0] == action_ids([first, retry])[1]
    assert len(target_server.received("/charge")) == 1
    assert first.meta is not None and first.meta[REPLAYED_META] is False
    assert retry.meta is not None and retry.meta[REPLAYED_META] is True
    assert retry.structured_content is not None and retry.structured_content["status"] == "succeeded"
    assert f"send a new `{IDEMPOTENCY_KEY_META}`" in text_of(retry)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_retries_racing_each_other_without_a_key_record_one_action(
    outbox: RunningOutbox, target_server: TargetServer
) -> None:
    key = outbox.agent("writer", "http-writer")
    charge = post(target_server, "/raced", {"amount": 10})

    async def one() -> types.CallToolResult:
        async with mcp_client(outbox.mcp_url, key) as client:
            return await client.call_tool("http__request", charge)

    async def scenario() -> list[types.CallToolResult]:
        return list(await asyncio.gather(*(one() for _ in range(8))))

    results = asyncio.run(scenario())

    assert len(set(action_ids(results))) == 1
    assert len(target_server.received("/raced")) == 1


def test_a_call_with_other_arguments_or_for_another_person_is_another_call(
    outbox: RunningOutbox, target_server: TargetServer
) -> None:
    key = outbox.agent("writer", "http-writer")
    ada = {ON_BEHALF_OF_META: "ada@example.com"}
    grace = {ON_BEHALF_OF_META: "grace@example.com"}

    results = calls(
        outbox,
        key,
        [
            (post(target_server, "/charge", {"amount": 10}), ada),
            (post(target_server, "/charge", {"amount": 11}), ada),
            (post(target_server, "/charge", {"amount": 10}), grace),
        ],
    )

    assert len(set(action_ids(results))) == 3
    assert len(target_server.received("/charge")) == 3


def test_two_intentional_calls_with_different_meta_keys_execute_twice(
    outbox: RunningOutbox, target_server: TargetServer
) -> None:
    key = outbox.agent("writer", "http-writer")
    reminder = post(target_server, "/remind", {"who": "ada"})

    results = calls(
        outbox,
        key,
        [(reminder, {IDEMPOTENCY_KEY_META: "reminder-1"}), (reminder, {IDEMPOTENCY_KEY_META: "reminder-2"})],
    )

    assert len(set(action_ids(results))) == 2
    assert len(target_server.received("/remind")) == 2


def test_a_retried_call_with_a_meta_key_executes_once(outbox: RunningOutbox, target_server: TargetServer) -> None:
    key = outbox.agent("writer", "http-writer")
    charge = post(target_server, "/keyed", {"amount": 10})
    meta = {IDEMPOTENCY_KEY_META: "order-1234-charge"}

    first, retry = calls(outbox, key, [(charge, meta), (charge, meta)])

    assert action_ids([first])[0] == action_ids([retry])[0]
    assert len(target_server.received("/keyed")) == 1
    assert retry.meta is not None and retry.meta[REPLAYED_META] is True


def test_the_same_meta_key_with_other_arguments_is_a_tool_error_saying_so(
    outbox: RunningOutbox, target_server: TargetServer
) -> None:
    key = outbox.agent("writer", "http-writer")
    meta = {IDEMPOTENCY_KEY_META: "order-1234-charge"}

    first, other = calls(
        outbox,
        key,
        [(post(target_server, "/keyed", {"amount": 10}), meta), (post(target_server, "/keyed", {"amount": 99}), meta)],
    )

    assert first.is_error is False
    assert other.is_error is True
    assert other.structured_content is None
    text = text_of(other)
    assert "already used for a different request" in text
    assert f"Send a new `{IDEMPOTENCY_KEY_META}` in `_meta`" in text
    assert len(target_server.received("/keyed")) == 1


def test_a_meta_key_that_is_not_printable_ascii_is_a_tool_error(
    outbox: RunningOutbox, target_server: TargetServer
) -> None:
    key = outbox.agent("writer", "http-writer")

    [result] = calls(outbox, key, [(post(target_server, "/x", {}), {IDEMPOTENCY_KEY_META: "two words"})])

    assert result.is_error is True
    assert "printable ASCII" in text_of(result)
    assert target_server.received() == []


def test_with_the_window_at_zero_every_keyless_call_is_a_new_action(
    make_outbox: Callable[..., RunningOutbox], target_server: TargetServer
) -> None:
    outbox = make_outbox(mcp_derived_key_window_seconds=0)
    key = outbox.agent("writer", "http-writer")
    charge = post(target_server, "/unguarded", {"amount": 10})

    results = calls(outbox, key, [(charge, None), (charge, None)])

    assert len(set(action_ids(results))) == 2
    assert len(target_server.received("/unguarded")) == 2


def test_an_identical_call_made_after_the_window_is_a_new_action(
    make_outbox: Callable[..., RunningOutbox], target_server: TargetServer
) -> None:
    outbox = make_outbox(mcp_derived_key_window_seconds=1)
    key = outbox.agent("writer", "http-writer")
    charge = post(target_server, "/later", {"amount": 10})

    [first] = calls(outbox, key, [(charge, None)])
    # More than a window later, whichever buckets the two calls fall in.
    time.sleep(1.2)
    [later] = calls(outbox, key, [(charge, None)])

    assert action_ids([first]) != action_ids([later])
    assert len(target_server.received("/later")) == 2


# The bucket rule itself, on the service without HTTP: a keyless call first looks at the key of
# the previous bucket, and replays it only while its action is younger than one window.


def keyless_call(runtime: Runtime, agent: AuthenticatedAgent) -> keys.Submitted:
    envelope = parse_envelope({"tool": "http.request", "args": {"method": "POST", "url": "http://127.0.0.1:9/b"}})
    return keys.submit(runtime, agent, envelope, None, {"face": "test"})


def record_in_previous_bucket(runtime: Runtime, agent: AuthenticatedAgent, *, age: timedelta) -> str:
    """The same call, recorded under the previous bucket's key, `age` ago."""
    window = runtime.settings.mcp_derived_key_window_seconds
    envelope = parse_envelope({"tool": "http.request", "args": {"method": "POST", "url": "http://127.0.0.1:9/b"}})
    previous = keys.derived_key(agent, envelope, window, math.floor(time.time() / window) - 1)
    answer = submit(runtime, agent, envelope, previous, {"face": "test"})
    assert answer.action_id is not None
    with runtime.db.session() as session:
        session.execute(update(Action).where(col(Action.id) == answer.action_id).values(created_at=utcnow() - age))
    return answer.action_id


def the_agent(runtime: Runtime) -> AuthenticatedAgent:
    key = make_agent(runtime.db, "writer", ["http-writer"])
    with runtime.db.session() as session:
        agent = authenticate(session, key)
    assert agent is not None
    return agent


def test_a_call_replays_the_previous_buckets_call_while_it_is_younger_than_a_window(runtime: Runtime) -> None:
    agent = the_agent(runtime)
    earlier = record_in_previous_bucket(runtime, agent, age=timedelta(seconds=540))

    submitted = keyless_call(runtime, agent)

    assert submitted.answer.action_id == earlier
    assert submitted.answer.replayed is True
    assert submitted.source == "derived"


def test_a_call_does_not_replay_the_previous_buckets_call_once_it_is_a_window_old(runtime: Runtime) -> None:
    agent = the_agent(runtime)
    earlier = record_in_previous_bucket(runtime, agent, age=timedelta(seconds=601))

    submitted = keyless_call(runtime, agent)
    again = keyless_call(runtime, agent)

    assert submitted.answer.action_id != earlier
    assert submitted.answer.replayed is False
    # The new one is the call of this bucket: the next identical call replays it.
    assert again.answer.action_id == submitted.answer.action_id
    assert again.answer.replayed is True
