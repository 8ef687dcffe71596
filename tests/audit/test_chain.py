"""The audit log is append-only and hash-chained: tampering is detected and located."""

from __future__ import annotations

import io
import itertools
import json

import pytest
from sqlalchemy import delete, text, update
from sqlmodel import col, select
from typer.testing import CliRunner

from outbox.audit.models import AuditEvent
from outbox.audit.service import record_event, verify_chain
from outbox.cli.main import app
from outbox.config import get_settings
from outbox.execution.service import run_action
from outbox.recordings.export import export_jsonl
from outbox.runtime import Runtime
from tests.support.agents import make_agent
from tests.support.audit import seal
from tests.support.calls import submit_call
from tests.support.http_target import TargetServer


@pytest.fixture
def chain(runtime: Runtime) -> list[int]:
    with runtime.db.session() as session:
        for n in range(6):
            record_event(session, event_type="test.event", actor="test", data={"n": n, "text": "é ✓", "float": 1e20})
    assert seal(runtime) == 6
    with runtime.db.session() as session:
        return [e.id for e in session.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all()]  # type: ignore[misc]


def test_an_untouched_chain_verifies(runtime: Runtime, chain: list[int]) -> None:
    with runtime.db.session() as session:
        assert verify_chain(session) == (6, None)


def test_an_edited_event_is_named(runtime: Runtime, chain: list[int]) -> None:
    with runtime.db.session() as session:
        session.execute(update(AuditEvent).where(col(AuditEvent.id) == chain[3]).values(actor="someone-else"))
    with runtime.db.session() as session:
        _count, broken = verify_chain(session)
    assert broken is not None
    assert broken.event_id == chain[3]
    assert "edited" in broken.problem


def test_an_edit_that_recomputes_its_own_hash_breaks_the_next_link(runtime: Runtime, chain: list[int]) -> None:
    with runtime.db.session() as session:
        session.execute(update(AuditEvent).where(col(AuditEvent.id) == chain[2]).values(hash="f" * 64))
    with runtime.db.session() as session:
        _count, broken = verify_chain(session)
    assert broken is not None
    assert broken.event_id == chain[2]


def test_a_deleted_event_is_detected_at_its_successor(runtime: Runtime, chain: list[int]) -> None:
    with runtime.db.session() as session:
        session.execute(delete(AuditEvent).where(col(AuditEvent.id) == chain[1]))
    with runtime.db.session() as session:
        _count, broken = verify_chain(session)
    assert broken is not None
    assert broken.event_id == chain[2]


def test_an_inserted_event_is_detected(runtime: Runtime, chain: list[int]) -> None:
    with runtime.db.session() as session:
        fake = AuditEvent(
            id=chain[-1] + 100,
            event_type="test.event",
            actor="forger",
            data_json="{}",
            seq=len(chain) + 1,  # a row forged into the chain at the next position
            prev_hash="0" * 64,
            hash="1" * 64,
        )
        session.add(fake)
    with runtime.db.session() as session:
        _count, broken = verify_chain(session)
    assert broken is not None
    assert broken.event_id == chain[-1] + 100


def test_cli_verify_exits_non_zero_and_names_the_event(
    runtime: Runtime, chain: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTBOX_DATABASE_URL", runtime.settings.database_url)
    monkeypatch.setenv("OUTBOX_DATA_DIR", str(runtime.settings.data_dir))
    get_settings.cache_clear()
    try:
        ok = CliRunner().invoke(app, ["audit", "verify"])
        assert ok.exit_code == 0, ok.output
        assert "6 events verified" in ok.output
        with runtime.db.session() as session:
            session.execute(update(AuditEvent).where(col(AuditEvent.id) == chain[4]).values(data_json='{"n":400}'))
        broken = CliRunner().invoke(app, ["audit", "verify"])
        assert broken.exit_code == 1
        assert f"event {chain[4]}" in broken.output
    finally:
        get_settings.cache_clear()


def test_export_holds_request_decision_artifact_and_response(runtime: Runtime, target_server: TargetServer) -> None:
    key = make_agent(runtime.db, "exported", ["http-writer"])
    action_id = submit_call(
        runtime, key, "http.request", {"method": "POST", "url": f"{target_server.base_url}/v1/x", "json": {"a": 1}}
    )
    run_action(runtime, action_id)

    seal(runtime)  # what `outbox audit export` does first
    out = io.StringIO()
    with runtime.db.session() as session:
        count = export_jsonl(session, out)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert records[0]["record"] == "header"
    assert records[-1]["record"] == "end"
    lines = records[1:-1]
    assert count == len(lines) >= 5
    first = next(line for line in lines if line["action_id"] == action_id)
    action = first["action"]
    assert action["request"]["body"] == "(test)"
    assert action["decision"]["effect"] == "allow"
    assert action["artifact"]["body"] == '{"a":1}'
    assert action["response"]["status"] == 200
    assert [line["to"] for line in lines if line["action_id"] == action_id] == [
        "received",
        "queued",
        "running",
        "succeeded",
    ]
    assert all(line["prev_hash"] == prev["hash"] for prev, line in itertools.pairwise(lines))


def test_events_exist_exactly_when_their_transaction_commits(runtime: Runtime) -> None:
    with runtime.db.session() as session:
        record_event(session, event_type="kept.before_savepoint", actor="test")
        savepoint = session.begin_nested()
        session.execute(text("SELECT 1"))
        savepoint.rollback()  # a refused budget reservation, say
        record_event(session, event_type="kept.after_savepoint", actor="test")

    def failing_transition() -> None:
        with runtime.db.session() as session:
            record_event(session, event_type="rolled.back", actor="test")
            raise RuntimeError("the state change failed")

    with pytest.raises(RuntimeError):
        failing_transition()

    assert seal(runtime) == 2
    with runtime.db.session() as session:
        types = [e.event_type for e in session.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all()]
        assert types == ["kept.before_savepoint", "kept.after_savepoint"]
        assert verify_chain(session) == (2, None)
