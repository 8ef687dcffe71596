"""Many submissions at once, through the service the HTTP and MCP faces share: one key records
one action whoever wins, and distinct keys are all recorded (SQLite's group commit, PostgreSQL's
concurrent transactions)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col, func, select

from outbox.actions import service
from outbox.actions.models import Action
from outbox.agents.service import AuthenticatedAgent, authenticate
from outbox.audit.models import AuditEvent
from outbox.audit.service import verify_chain
from outbox.errors import IdempotencyKeyReused
from outbox.idempotency.models import IdempotencyRecord
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from tests.support.agents import make_agent
from tests.support.audit import seal

RECORD: dict[str, Any] = {"method": "POST", "path": "/v1/actions", "headers": {}, "body": "{}"}


@pytest.fixture
def agent(runtime: Runtime) -> AuthenticatedAgent:
    key = make_agent(runtime.db, "racer", ["http-reader"])
    with runtime.db.single_reads() as connection:
        found = authenticate(connection, key)
    assert found is not None
    return found


def _call(path: str) -> service.ActionCreate:
    return service.parse_envelope(
        {"tool": "http.request", "args": {"method": "GET", "url": f"http://127.0.0.1:9{path}"}}
    )


def _count(runtime: Runtime, table: type[Action] | type[IdempotencyRecord]) -> int:
    with runtime.db.read_session() as session:
        return int(session.exec(select(func.count()).select_from(table)).one())


def test_fifty_submissions_with_one_key_record_one_action_and_all_get_its_answer(
    runtime: Runtime, agent: AuthenticatedAgent
) -> None:
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(lambda _: service.submit(runtime, agent, _call("/pay"), "same", RECORD), range(50)))

    assert {a.status for a in answers} == {202}
    assert len({a.action_id for a in answers}) == 1
    assert all(a.body == answers[0].body for a in answers)
    assert sum(not a.replayed for a in answers) == 1
    assert _count(runtime, Action) == 1
    assert _count(runtime, IdempotencyRecord) == 1


def test_one_key_raced_with_different_calls_records_one_and_refuses_the_others(
    runtime: Runtime, agent: AuthenticatedAgent
) -> None:
    def submit(number: int) -> service.Answer | IdempotencyKeyReused:
        try:
            return service.submit(runtime, agent, _call(f"/item/{number}"), "contested", RECORD)
        except IdempotencyKeyReused as refused:
            return refused

    with ThreadPoolExecutor(max_workers=30) as pool:
        outcomes = list(pool.map(submit, range(30)))

    recorded = [o for o in outcomes if isinstance(o, service.Answer)]
    assert len(recorded) == 1
    assert all(isinstance(o, IdempotencyKeyReused) for o in outcomes if o is not recorded[0])
    with runtime.db.read_session() as session:
        assert session.exec(select(Action.id)).all() == [recorded[0].action_id]


def test_two_hundred_distinct_submissions_at_once_are_all_recorded_with_their_events(
    runtime: Runtime, agent: AuthenticatedAgent
) -> None:
    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(
            pool.map(lambda n: service.submit(runtime, agent, _call(f"/n/{n}"), f"key-{n}", RECORD), range(200))
        )

    assert [a.status for a in answers] == [202] * 200
    assert len({a.action_id for a in answers}) == 200
    seal(runtime)
    with runtime.db.read_session() as session:
        stored = session.exec(select(Action).where(col(Action.id).in_([a.action_id for a in answers]))).all()
        assert {a.status for a in stored} == {"queued"}
        # Two events per submission (received, queued), one unbroken chain.
        assert verify_chain(session) == (400 + _setup_events(session), None)


def _setup_events(session: Any) -> int:
    """Events written before the race (creating the agent)."""

    return int(
        session.exec(select(func.count()).select_from(AuditEvent).where(col(AuditEvent.action_id).is_(None))).one()
    )


def test_an_expired_key_raced_by_many_retries_records_one_new_action(
    runtime: Runtime, agent: AuthenticatedAgent
) -> None:
    """A key whose record expired is free again: twenty requests reusing it at once record one
    new action between them, and every one gets its answer (none an error)."""
    first = service.submit(runtime, agent, _call("/old"), "reused-after-expiry", RECORD)
    with runtime.db.session() as session:
        session.execute(
            update(IdempotencyRecord)
            .where(col(IdempotencyRecord.key) == "reused-after-expiry")
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(
            pool.map(lambda _: service.submit(runtime, agent, _call("/new"), "reused-after-expiry", RECORD), range(20))
        )

    assert {a.status for a in answers} == {202}
    new_ids = {a.action_id for a in answers}
    assert len(new_ids) == 1
    assert first.action_id not in new_ids
    assert _count(runtime, Action) == 2
    assert _count(runtime, IdempotencyRecord) == 1
