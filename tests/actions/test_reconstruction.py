"""`verify` rebuilds each action's status, tool, arguments and principal from its events and names
every action whose row in `actions` disagrees."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import delete, update
from sqlmodel import col

from outbox.actions.models import Action
from outbox.actions.reconstruction import same_json
from outbox.actions.service import cancel_action, parse_envelope, submit
from outbox.agents.service import authenticate
from outbox.execution.service import run_action
from outbox.runtime import Runtime
from tests.support.agents import make_agent
from tests.support.audit import checkpointer, verify
from tests.support.http_target import TargetServer


def _submit(runtime: Runtime, key: str, args: dict[str, Any], on_behalf_of: str | None = None) -> str:
    with runtime.db.session() as session:
        agent = authenticate(session, key)
    assert agent is not None
    envelope: dict[str, Any] = {"tool": "http.request", "args": args}
    if on_behalf_of is not None:
        envelope["on_behalf_of"] = on_behalf_of
    answer = submit(runtime, agent, parse_envelope(envelope), str(uuid.uuid4()), {"method": "POST", "body": "(test)"})
    assert answer.action_id is not None
    return answer.action_id


@pytest.fixture
def actions(runtime: Runtime, target_server: TargetServer) -> dict[str, str]:
    """Actions in several states, each reached through the real pipeline."""
    writer = make_agent(runtime.db, "writer", ["http-writer"])
    nobody = make_agent(runtime.db, "nobody", [])
    url = f"{target_server.base_url}/v1/things"
    ran = _submit(
        runtime,
        writer,
        {"method": "POST", "url": url, "json": {"n": 1, "small": 1e-07, "yes": True}},
        "ada@example.com",
    )
    run_action(runtime, ran)
    denied = _submit(runtime, nobody, {"method": "POST", "url": url})
    queued = _submit(runtime, writer, {"method": "PUT", "url": url, "json": {"flag": False}})
    cancelled = _submit(runtime, writer, {"method": "PATCH", "url": url})
    awaiting = _submit(runtime, writer, {"method": "DELETE", "url": f"{url}/1"})
    with runtime.db.session() as session:
        agent = authenticate(session, writer)
    assert agent is not None
    cancel_action(runtime, agent, cancelled)
    checkpointer(runtime).checkpoint_once()
    return {"ran": ran, "denied": denied, "queued": queued, "cancelled": cancelled, "awaiting": awaiting}


def _edit(runtime: Runtime, action_id: str, **values: Any) -> None:
    with runtime.db.session() as session:
        session.execute(update(Action).where(col(Action.id) == action_id).values(**values))


def test_untouched_actions_agree_with_their_events(runtime: Runtime, actions: dict[str, str]) -> None:
    statuses = {name: _status(runtime, action_id) for name, action_id in actions.items()}
    assert statuses == {
        "ran": "succeeded",
        "denied": "denied",
        "queued": "queued",
        "cancelled": "cancelled",
        "awaiting": "awaiting_approval",
    }
    report = verify(runtime)
    assert report.ok, report.failures + report.action_mismatches


def _status(runtime: Runtime, action_id: str) -> str:
    with runtime.db.session() as session:
        action = session.get(Action, action_id)
    assert action is not None
    return action.status


@pytest.mark.parametrize(
    ("which", "status"),
    [("denied", "queued"), ("awaiting", "queued"), ("ran", "failed"), ("cancelled", "awaiting_approval")],
)
def test_an_edited_status_is_named(runtime: Runtime, actions: dict[str, str], which: str, status: str) -> None:
    _edit(runtime, actions[which], status=status)
    report = verify(runtime)
    assert not report.ok
    assert report.chain_break is None and not report.failures  # the chain and checkpoints are fine
    [mismatch] = report.action_mismatches
    assert mismatch.startswith(f"action {actions[which]} status is '{status}' in actions but ")
    assert "the row was edited" in mismatch


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("args", {"method": "POST", "url": "http://127.0.0.1:1/v1/admin/users"}, "args is "),
        ("args", "same-but-one-bit", "args is "),
        ("args", "true-becomes-1", "args is "),
        ("tool", "command.kubectl", "tool is "),
        ("on_behalf_of", "lead@example.com", "on_behalf_of is "),
        ("on_behalf_of", None, "on_behalf_of is "),
    ],
    ids=["args-replaced", "args-one-value", "args-bool-as-number", "tool", "principal-changed", "principal-removed"],
)
def test_an_edited_request_is_named(
    runtime: Runtime, actions: dict[str, str], field: str, value: Any, shown: str
) -> None:
    with runtime.db.session() as session:
        row = session.get(Action, actions["ran"])
        assert row is not None
        args = dict(row.args)
    if value == "same-but-one-bit":
        value = {**args, "json": {**args["json"], "n": 2}}
    elif value == "true-becomes-1":
        value = {**args, "json": {**args["json"], "yes": 1}}
    _edit(runtime, actions["ran"], **{field: value})
    report = verify(runtime)
    [mismatch] = report.action_mismatches
    assert mismatch.startswith(f"action {actions['ran']} {shown}")
    assert "action.received" in mismatch


def test_a_deleted_action_row_and_a_row_without_events_are_named(runtime: Runtime, actions: dict[str, str]) -> None:
    with runtime.db.session() as session:
        session.execute(delete(Action).where(col(Action.id) == actions["denied"]))
        original = session.get(Action, actions["queued"])
        assert original is not None
        values = original.model_dump(exclude={"id", "idempotency_key"})
        session.add(Action(id="act_smuggled", idempotency_key="smuggled", **values))
    mismatches = verify(runtime).action_mismatches
    assert any(
        m.startswith(f"action {actions['denied']} received (event ") and "row in actions is gone" in m
        for m in mismatches
    )
    assert any(
        m.startswith("action act_smuggled has a row in actions but no action.received event") for m in mismatches
    )


def test_json_comparison_is_by_value_but_never_confuses_booleans_and_numbers() -> None:
    assert same_json({"a": 1e20, "b": [1.0]}, {"b": [1], "a": 100000000000000000000})
    assert not same_json({"a": True}, {"a": 1})
    assert not same_json([False], [0])
    assert not same_json({"a": None}, {})
    assert not same_json("1", 1)
    assert not same_json([1, 2], [2, 1])
