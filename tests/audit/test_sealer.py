"""Audit events are inserted unsealed by the transaction that makes them true and chained by the
sealer afterwards: in one dense, unbroken chain, whatever order concurrent transactions commit in,
with tampering still detected."""

from __future__ import annotations

import io
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, event, text, update
from sqlmodel import col, select
from typer.testing import CliRunner

from outbox.audit.models import AuditEvent
from outbox.audit.sealer import has_unsealed, seal_all, seal_pending
from outbox.audit.service import record_event, unsealed_events, verify_chain
from outbox.cli.main import app
from outbox.config import Settings, get_settings
from outbox.db import Database
from outbox.recordings.export import export_jsonl
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from tests.support.agents import make_agent
from tests.support.audit import checkpointer, seal, verify
from tests.support.calls import submit_call


def _record(db: Database, *names: str) -> None:
    """One transaction that records these events (the way every transition does), unsealed."""
    with db.session() as session:
        for name in names:
            record_event(session, event_type=name, actor="test", data={"name": name})


def _chain(db: Database) -> list[AuditEvent]:
    with db.read_session() as session:
        rows = list(session.exec(select(AuditEvent).order_by(col(AuditEvent.seq), col(AuditEvent.id))).all())
        session.expunge_all()  # kept as read: the read session's rollback would expire them
    return rows


def _names_in_chain_order(db: Database) -> list[str]:
    return [json.loads(e.data_json)["name"] for e in _chain(db) if e.seq is not None]


# --- (a) a request inserts, the sealer chains ---------------------------------------------------


def test_a_request_inserts_its_events_unsealed_and_the_sealer_chains_them_in_id_order(runtime: Runtime) -> None:
    key = make_agent(runtime.db, "requester", ["http-reader"])
    submit_call(runtime, key, "http.request", {"method": "GET", "url": "http://127.0.0.1:9/x"})
    pending = _chain(runtime.db)
    assert len(pending) >= 3  # the agent's creation, then the action received and queued
    assert all(e.seq is None and e.prev_hash is None and e.hash is None for e in pending)
    with runtime.db.read_session() as session:
        assert verify_chain(session) == (0, None)  # unsealed events are not the chain, and not a break
        assert unsealed_events(session) == len(pending)

    assert seal_pending(runtime.db) == len(pending)

    sealed = _chain(runtime.db)
    assert [e.seq for e in sealed] == list(range(1, len(pending) + 1))
    assert [e.id for e in sealed] == sorted(e.id for e in pending if e.id is not None)
    assert sealed[0].prev_hash == "0" * 64
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(sealed))
    with runtime.db.read_session() as session:
        assert verify_chain(session) == (len(pending), None)
        assert unsealed_events(session) == 0
    assert seal_pending(runtime.db) == 0
    assert not has_unsealed(runtime.db)


def test_the_sealer_appends_after_the_tail_in_batches(runtime: Runtime) -> None:
    _record(runtime.db, "a", "b", "c")
    assert seal_all(runtime.db) == 3
    _record(runtime.db, *[f"n{n}" for n in range(7)])
    assert seal_pending(runtime.db, limit=3) == 3
    assert seal_pending(runtime.db, limit=3) == 3
    assert seal_all(runtime.db, batch=3) == 1
    assert _names_in_chain_order(runtime.db) == ["a", "b", "c", *[f"n{n}" for n in range(7)]]
    with runtime.db.read_session() as session:
        assert verify_chain(session) == (10, None)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_request_commits_while_a_sealer_holds_the_chain_lock(runtime: Runtime) -> None:
    """No global lock in the request's transaction: with the sealers' advisory lock held elsewhere
    the request still commits (before, its commit waited for that lock)."""
    with runtime.db.engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_xact_lock(x'0A0D17'::int)"))
        with runtime.db.session() as session:
            # Fails with LockNotAvailable instead of hanging if the commit waits for a lock.
            session.execute(text("SET LOCAL lock_timeout = '5s'"))
            record_event(session, event_type="while.locked", actor="test")
        holder.rollback()
    assert seal_all(runtime.db) == 1


# --- the checkpointer's turn and the commands seal first ------------------------------------------


def test_a_checkpointer_turn_seals_the_pending_events_then_covers_them(runtime: Runtime) -> None:
    _record(runtime.db, "one", "two")
    _record(runtime.db, "three")
    written = checkpointer(runtime).checkpoint_once()
    assert written is not None
    assert written.signed.checkpoint.event_count == 3
    assert written.signed.checkpoint.last_event_id == _chain(runtime.db)[-1].id
    report = verify(runtime)
    assert report.ok, report.failures
    assert (report.events, report.unsealed, report.uncheckpointed) == (3, 0, 0)


def test_verify_counts_unsealed_events_without_calling_them_a_break(runtime: Runtime) -> None:
    _record(runtime.db, "sealed")
    checkpointer(runtime).checkpoint_once()
    _record(runtime.db, "late-1", "late-2")
    report = verify(runtime)
    assert report.ok, report.failures
    assert (report.events, report.unsealed) == (1, 2)
    assert any(note.startswith("not yet sealed (not verified): 2 events") for note in report.notes)
    # Still unsealed a minute later: the sealer is not running, which fails (it is not a break).
    stale = verify(runtime, now=utcnow() + timedelta(seconds=61))
    assert stale.chain_break is None
    assert any(f.startswith("not sealed: 2 events") and "60 s tolerance" in f for f in stale.failures)


@pytest.fixture
def cli(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    monkeypatch.setenv("OUTBOX_DATABASE_URL", runtime.settings.database_url)
    monkeypatch.setenv("OUTBOX_DATA_DIR", str(runtime.settings.data_dir))
    monkeypatch.setenv("OUTBOX_POLICY_DIR", str(runtime.settings.policy_dir))
    get_settings.cache_clear()
    yield lambda *args: CliRunner().invoke(app, list(args))
    get_settings.cache_clear()


def test_cli_verify_and_export_seal_first_and_cover_every_committed_event(
    runtime: Runtime, cli: Callable[..., Any]
) -> None:
    _record(runtime.db, "one", "two", "three")
    verified = cli("audit", "verify")
    assert "audit chain intact: 3 events verified" in verified.output
    assert not has_unsealed(runtime.db)
    _record(runtime.db, "four")
    exported = cli("audit", "export")
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert (lines[0]["record"], lines[-1]["record"]) == ("header", "end")
    assert [(line["seq"], line["data"]["name"]) for line in lines[1:-1]] == [
        (1, "one"),
        (2, "two"),
        (3, "three"),
        (4, "four"),
    ]


# --- (b) concurrent writers and sealers -----------------------------------------------------------


def _writer(settings: Settings, number: int, committed: list[str], errors: list[BaseException]) -> None:
    """Its own engine (its own connections): a replica's worth of writes, some of them rolled back."""
    db = Database(settings)
    try:
        for n in range(25):
            names = [f"w{number}-{n}-{k}" for k in range(1 + n % 3)]
            try:
                with db.session() as session:
                    for name in names:
                        record_event(session, event_type="race.write", actor="test", data={"name": name})
                    if n % 7 == 6:
                        raise LookupError("rolled back: its events never existed")
            except LookupError:
                continue
            committed.extend(names)
    except BaseException as exc:
        errors.append(exc)
    finally:
        db.dispose()


def _sealer(settings: Settings, done: threading.Event, errors: list[BaseException]) -> None:
    db = Database(settings)
    try:
        while not done.is_set():
            seal_pending(db, limit=17)
            # A breath between turns, as the checkpointer's interval gives: two threads retaking
            # SQLite's write lock back to back would starve the writers past busy_timeout.
            done.wait(0.002)
    except BaseException as exc:
        errors.append(exc)
    finally:
        db.dispose()


def test_concurrent_writers_and_sealers_make_one_dense_unbroken_chain_of_every_committed_event(
    runtime: Runtime,
) -> None:
    committed: list[str] = []
    errors: list[BaseException] = []
    done = threading.Event()
    sealers = [threading.Thread(target=_sealer, args=(runtime.settings, done, errors)) for _ in range(2)]
    writers = [threading.Thread(target=_writer, args=(runtime.settings, n, committed, errors)) for n in range(8)]
    for thread in [*sealers, *writers]:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    for thread in sealers:
        thread.join()
    assert not errors, errors
    seal_all(runtime.db)  # whatever committed after the sealers' last turn

    chain = _chain(runtime.db)
    assert [e.seq for e in chain] == list(range(1, len(chain) + 1))
    names = [json.loads(e.data_json)["name"] for e in chain]
    assert sorted(names) == sorted(committed)  # every committed event, exactly once
    assert len(set(names)) == len(names) == 8 * sum(1 + n % 3 for n in range(25) if n % 7 != 6)
    with runtime.db.read_session() as session:
        assert verify_chain(session) == (len(chain), None)


# --- (c) an event committed late, with a lower id ---------------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql"])
def test_an_event_committed_late_with_a_lower_id_is_chained_after_the_others(runtime: Runtime) -> None:
    """On PostgreSQL a transaction draws its event's id when it inserts and becomes visible when it
    commits: one that commits late is sealed at the next position, after events with higher ids."""
    slow = Database(runtime.settings)
    inserted, release = threading.Event(), threading.Event()

    @event.listens_for(slow.engine, "commit")
    def _stall(_connection: object) -> None:
        inserted.set()  # the before_commit hook has inserted the event: its id is drawn
        release.wait(30)

    late = threading.Thread(target=_record, args=(slow, "late"))
    late.start()
    try:
        assert inserted.wait(30)
        _record(runtime.db, "second")
        _record(runtime.db, "third")
        assert seal_all(runtime.db) == 2  # the late event is not committed yet: not visible
    finally:
        release.set()
        late.join()
        slow.dispose()
    assert seal_all(runtime.db) == 1

    chain = _chain(runtime.db)
    assert _names_in_chain_order(runtime.db) == ["second", "third", "late"]
    assert chain[2].id is not None and chain[0].id is not None
    assert chain[2].id < chain[0].id  # chain order is seq order, not id order
    with runtime.db.read_session() as session:
        assert verify_chain(session) == (3, None)
    written = checkpointer(runtime).checkpoint_once()
    assert written is not None
    assert (written.signed.checkpoint.event_count, written.signed.checkpoint.last_event_id) == (3, chain[2].id)
    assert verify(runtime).ok


# --- (d) tampering with sealed events ---------------------------------------------------------------


@pytest.fixture
def sealed_chain(runtime: Runtime) -> list[AuditEvent]:
    _record(runtime.db, "a", "b")
    _record(runtime.db, "c", "d", "e")
    assert seal(runtime) == 5
    return _chain(runtime.db)


def test_editing_a_sealed_event_s_data_is_detected_and_not_resealed(
    runtime: Runtime, sealed_chain: list[AuditEvent]
) -> None:
    target = sealed_chain[2].id
    with runtime.db.session() as session:
        session.execute(update(AuditEvent).where(col(AuditEvent.id) == target).values(data_json='{"name":"z"}'))
    assert seal(runtime) == 0  # a sealed event is never chained again
    with runtime.db.read_session() as session:
        _count, broken = verify_chain(session)
    assert broken is not None
    assert broken.event_id == target
    assert "edited" in broken.problem


def test_deleting_a_sealed_event_is_detected_at_its_successor(runtime: Runtime, sealed_chain: list[AuditEvent]) -> None:
    with runtime.db.session() as session:
        session.execute(delete(AuditEvent).where(col(AuditEvent.id) == sealed_chain[1].id))
    _record(runtime.db, "after")
    assert seal(runtime) == 1
    with runtime.db.read_session() as session:
        _count, broken = verify_chain(session)
    assert broken is not None
    assert broken.event_id == sealed_chain[2].id


def test_deleting_the_sealed_tail_is_named_by_the_checkpoint(runtime: Runtime, sealed_chain: list[AuditEvent]) -> None:
    checkpointer(runtime).checkpoint_once()
    with runtime.db.session() as session:
        session.execute(delete(AuditEvent).where(col(AuditEvent.id) == sealed_chain[-1].id))
    report = verify(runtime)
    assert report.chain_break is None
    assert "the database has 4: event 5 is missing" in report.failures[0]


def test_an_export_is_the_chain_in_seq_order(runtime: Runtime, sealed_chain: list[AuditEvent]) -> None:
    out = io.StringIO()
    with runtime.db.read_session() as session:
        assert export_jsonl(session, out) == 5
    lines = [json.loads(line) for line in out.getvalue().splitlines()][1:-1]
    assert [line["seq"] for line in lines] == [1, 2, 3, 4, 5]
    assert [line["hash"] for line in lines] == [e.hash for e in sealed_chain]
