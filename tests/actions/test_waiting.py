"""Waiting until an action is settled for now: one rule (`settled_for_now`) and one wait
(`wait_until_settled`) for HTTP's `Prefer: wait` and MCP's tools/call.

Settled for now: terminal, deferred (nothing happens before `not_before`), or, for a caller that
does not hold for a human, awaiting approval. The waits run against real actions: a mail that
execution defers because its send window is closed, an HTTP call to a real loopback server, an
approval a human decides through the admin API.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from outbox.actions import service
from outbox.actions.models import ActionStatus
from outbox.actions.waiting import settled_for_now, wait_until_settled
from outbox.agents.service import AuthenticatedAgent, authenticate
from outbox.approvals.service import decide
from outbox.execution.service import run_action
from outbox.runtime import Runtime
from tests.support.agents import make_agent
from tests.support.dispatchers import RecordingDispatcher
from tests.support.http_target import TargetServer
from tests.support.send_window import MAIL_SETTINGS, closed_window_message, opening_day, write_closed_window_mail

RECORD: dict[str, Any] = {"method": "POST", "path": "/v1/actions", "headers": {}, "body": "{}"}
# Long enough that an answer given before it passes was not held for the whole wait.
LONG_WAIT = 60.0

SETTLED = {"succeeded", "failed", "cancelled", "denied", "rejected", "expired", "deferred"}
MOVING = {"received", "queued", "running"}


def test_the_rule_names_every_status() -> None:
    assert SETTLED | MOVING | {"awaiting_approval"} == {s.value for s in ActionStatus}


@pytest.mark.parametrize("status", sorted(SETTLED))
def test_terminal_and_deferred_actions_are_settled_for_every_caller(status: str) -> None:
    assert settled_for_now(status)
    assert settled_for_now(status, hold_for_human=False)


@pytest.mark.parametrize("status", sorted(MOVING))
def test_actions_the_pipeline_is_moving_are_not_settled(status: str) -> None:
    assert not settled_for_now(status)
    assert not settled_for_now(status, hold_for_human=False)


def test_awaiting_approval_is_settled_only_for_a_caller_that_does_not_hold_for_the_human() -> None:
    assert not settled_for_now("awaiting_approval")
    assert settled_for_now("awaiting_approval", hold_for_human=False)


def agent_of(runtime: Runtime, key: str) -> AuthenticatedAgent:
    with runtime.db.single_reads() as connection:
        agent = authenticate(connection, key)
    assert agent is not None
    return agent


def wait_while(
    runtime: Runtime, agent: AuthenticatedAgent, answer: service.Answer, meanwhile: Callable[[], object], **options: Any
) -> tuple[service.Answer, float]:
    """Start waiting on `answer`, run `meanwhile` in a thread while the wait runs; the answer the
    wait ended with, and how long it took after `meanwhile` returned."""

    async def scenario() -> tuple[service.Answer, float]:
        ended: list[service.Answer] = []
        done_at: list[float] = []

        async def waiter() -> None:
            ended.append(await wait_until_settled(runtime, agent, answer, LONG_WAIT, **options))

        async with anyio.create_task_group() as group:
            group.start_soon(waiter)
            await anyio.to_thread.run_sync(meanwhile)
            done_at.append(time.monotonic())
        return ended[0], time.monotonic() - done_at[0]

    return anyio.run(scenario)


def test_a_deferred_mail_ends_the_wait_at_once_with_not_before_and_retry_after(
    make_runtime: Callable[..., Runtime], policy_dir: Path, tmp_path: Path
) -> None:
    write_closed_window_mail(policy_dir, tmp_path)
    runtime = make_runtime(RecordingDispatcher(), **MAIL_SETTINGS)
    agent = agent_of(runtime, make_agent(runtime.db, "mailer-bot", ["mailer"]))
    envelope = service.parse_envelope({"tool": "email.send", "args": closed_window_message()})
    submitted = service.submit(runtime, agent, envelope, "weekly-report", RECORD)
    assert submitted.status == 202
    assert submitted.action is not None
    assert submitted.action["status"] == "queued"
    assert submitted.action_id is not None
    action_id = submitted.action_id

    answer, after = wait_while(runtime, agent, submitted, lambda: run_action(runtime, action_id))

    assert after < LONG_WAIT / 2  # not held for the wait: the closed window will not open meanwhile
    assert answer.status == 202
    assert answer.action is not None
    assert answer.body["status"] == "deferred"
    assert answer.body["not_before"] == opening_day().isoformat().replace("+00:00", "Z")
    assert "outside the send window" in answer.body["status_reason"]
    # Whole seconds until the window opens, counted when the answer was made (a moment ago).
    later = service.seconds_until(opening_day())
    assert answer.retry_after is not None
    assert later <= answer.retry_after <= later + 5


def test_a_call_that_finishes_ends_the_wait_with_200_and_its_outcome(
    runtime: Runtime, target_server: TargetServer
) -> None:
    agent = agent_of(runtime, make_agent(runtime.db, "reader", ["http-reader"]))
    envelope = service.parse_envelope(
        {"tool": "http.request", "args": {"method": "GET", "url": f"{target_server.base_url}/v1/ping"}}
    )
    submitted = service.submit(runtime, agent, envelope, "ping", RECORD)
    assert submitted.action_id is not None
    action_id = submitted.action_id

    answer, after = wait_while(runtime, agent, submitted, lambda: run_action(runtime, action_id))

    assert after < LONG_WAIT / 2
    assert answer.status == 200
    assert answer.body["status"] == "succeeded"
    assert answer.body["result"]["response"]["status"] == 200
    assert answer.retry_after is None
    assert not answer.replayed
    assert len(target_server.received("/v1/ping")) == 1


def test_a_wait_that_runs_out_answers_with_the_action_as_it_is(runtime: Runtime) -> None:
    agent = agent_of(runtime, make_agent(runtime.db, "reader", ["http-reader"]))
    envelope = service.parse_envelope({"tool": "http.request", "args": {"method": "GET", "url": "http://127.0.0.1:9/"}})
    submitted = service.submit(runtime, agent, envelope, "nobody-runs-it", RECORD)

    # The recording dispatcher runs nothing: the action stays queued for the whole wait.
    answer = anyio.run(wait_until_settled, runtime, agent, submitted, 0.3)

    assert answer.status == 202
    assert answer.body == submitted.body
    assert answer.body["status"] == "queued"


def deployer_call(runtime: Runtime, target_server: TargetServer) -> tuple[AuthenticatedAgent, service.Answer]:
    agent = agent_of(runtime, make_agent(runtime.db, "deployer", ["http-writer"]))
    envelope = service.parse_envelope(
        {"tool": "http.request", "args": {"method": "DELETE", "url": f"{target_server.base_url}/items/7"}}
    )
    submitted = service.submit(runtime, agent, envelope, "delete-7", RECORD)
    assert submitted.status == 202
    assert submitted.body["status"] == "awaiting_approval"
    return agent, submitted


def test_awaiting_approval_ends_the_wait_at_once_for_a_caller_that_does_not_hold_for_the_human(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    agent, submitted = deployer_call(gate_runtime, target_server)

    started = time.monotonic()
    answer = anyio.run(lambda: wait_until_settled(gate_runtime, agent, submitted, LONG_WAIT, hold_for_human=False))

    assert time.monotonic() - started < LONG_WAIT / 2
    assert answer.status == 202
    assert answer.body["status"] == "awaiting_approval"


def test_a_wait_that_holds_for_the_human_ends_with_the_rejection(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    agent, submitted = deployer_call(gate_runtime, target_server)
    assert submitted.action_id is not None
    action_id = submitted.action_id

    def human_rejects() -> None:
        decide(gate_runtime, action_id, "user:lead@example.com", "deny", via="test", reason="not during the freeze")

    answer, after = wait_while(gate_runtime, agent, submitted, human_rejects)

    assert after < LONG_WAIT / 2
    assert answer.status == 403
    assert answer.body["type"].endswith("/rejected-by-approver")
    assert answer.body["detail"] == "user:lead@example.com rejected this call: not during the freeze"
    assert answer.action is not None
    assert answer.action["status"] == "rejected"
    assert target_server.received() == []


def test_an_answer_without_an_action_is_returned_as_it_is(runtime: Runtime) -> None:
    agent = agent_of(runtime, make_agent(runtime.db, "reader", ["http-reader"]))
    stored = service.Answer(409, {"detail": "as stored"}, None, replayed=True)

    assert anyio.run(wait_until_settled, runtime, agent, stored, LONG_WAIT) is stored
