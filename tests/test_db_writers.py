"""The writers of one process: a fair lock with workers first, and group commit (`Database.write`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool
from sqlmodel import Session, col, select

from outbox.audit.models import AuditEvent
from outbox.audit.sealer import seal_all
from outbox.audit.service import record_event, verify_chain
from outbox.config import Settings
from outbox.db import PING_IDLE_AFTER, Database, WriterQueue, draining


def _wait_for(predicate: Callable[[], bool]) -> None:
    """Until another thread got where the test needs it (a queue position); never a timing assertion."""
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, "a thread never got there"
        time.sleep(0.001)


def _queued(lock: WriterQueue) -> int:
    return len(lock._drains) + len(lock._fills)


def _contend(lock: WriterQueue, arrivals: list[tuple[str, bool]]) -> list[str]:
    """Hold the lock while each named thread queues, in this order, then let go: the order in
    which they got it."""
    got: list[str] = []

    def take(name: str, drains: bool) -> None:
        if drains:
            with draining(), lock:
                got.append(name)
        else:
            with lock:
                got.append(name)

    threads = []
    with lock:
        for number, (name, drains) in enumerate(arrivals, start=1):
            thread = threading.Thread(target=take, args=(name, drains))
            thread.start()
            threads.append(thread)
            _wait_for(lambda n=number: _queued(lock) == n)  # type: ignore[misc]
    for thread in threads:
        thread.join()
    return got


def test_writers_get_the_lock_in_arrival_order() -> None:
    arrivals = [(f"request-{n}", False) for n in range(8)]
    assert _contend(WriterQueue(), arrivals) == [name for name, _ in arrivals]


def test_a_waiting_worker_goes_before_waiting_requests() -> None:
    arrivals = [("request-0", False), ("request-1", False), ("worker-0", True), ("request-2", False)]
    assert _contend(WriterQueue(), arrivals) == ["worker-0", "request-0", "request-1", "request-2"]


def test_requests_still_get_a_turn_between_bursts_of_workers() -> None:
    burst = WriterQueue.DRAIN_BURST
    arrivals = [("request-0", False), *[(f"worker-{n}", True) for n in range(burst + 2)]]
    order = _contend(WriterQueue(), arrivals)
    assert order.index("request-0") == burst
    assert sorted(order) == sorted(name for name, _ in arrivals)


def test_the_lock_is_reentrant_for_its_owner() -> None:
    lock = WriterQueue()
    with lock, lock:
        pass
    # Free again: another thread takes it at once.
    taken = threading.Event()

    def take() -> None:
        with lock:
            taken.set()

    thread = threading.Thread(target=take)
    thread.start()
    thread.join()
    assert taken.is_set()


def _names(db: Database) -> list[str]:
    with db.read_session() as session:
        return sorted(e.event_type for e in session.exec(select(AuditEvent).order_by(col(AuditEvent.id))))


def _record(name: str) -> Callable[[Session], str]:
    def job(session: Session) -> str:
        record_event(session, event_type=name, actor="test")
        return name

    return job


def _fail(session: Session) -> None:
    record_event(session, event_type="never", actor="test")
    raise LookupError("this job fails")


def test_a_write_returns_its_job_s_value_and_commits(settings: Settings) -> None:
    with Database(settings) as db:
        assert db.write(_record("one")) == "one"
        assert _names(db) == ["one"]


def test_a_failing_write_raises_in_its_caller_and_leaves_nothing(settings: Settings) -> None:
    with Database(settings) as db:
        with pytest.raises(LookupError, match="this job fails"):
            db.write(_fail)
        assert _names(db) == []


def test_concurrent_writes_are_committed_together_and_a_failing_one_alone_rolls_back(settings: Settings) -> None:
    """Sixty writers at once, every third one failing: each caller gets its own outcome, and the
    failures leave no trace (not even their audit events). On SQLite, the sixty writes that
    queued while another writer held the lock are committed in one transaction."""
    results: dict[int, object] = {}
    commits = 0
    with Database(settings) as db:

        @event.listens_for(db.engine, "commit")
        def _count(_connection: object) -> None:
            nonlocal commits
            commits += 1

        def writer(number: int) -> None:
            try:
                results[number] = db.write(_fail if number % 3 == 0 else _record(f"write-{number:02}"))
            except LookupError as exc:
                results[number] = exc

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(60)]
        with db._writers:  # another writer holds the lock while all sixty arrive
            for thread in threads:
                thread.start()
            if db._group is not None:
                _wait_for(lambda: len(db._group._queue) == 60)  # type: ignore[union-attr]
        for thread in threads:
            thread.join()

        failed = [n for n in range(60) if n % 3 == 0]
        assert all(isinstance(results[n], LookupError) for n in failed)
        assert {n: results[n] for n in range(60) if n not in failed} == {
            n: f"write-{n:02}" for n in range(60) if n not in failed
        }
        assert _names(db) == [f"write-{n:02}" for n in range(60) if n not in failed]
        # Group commit on SQLite; on PostgreSQL every successful write is its own transaction.
        assert commits == (1 if settings.is_sqlite else 40)
        assert seal_all(db) == 40
        with db.read_session() as session:
            assert verify_chain(session) == (40, None)


# Group commit is SQLite's; PostgreSQL commits each write alone.
@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_batch_whose_commit_fails_fails_every_caller(settings: Settings) -> None:
    """One job leaves a foreign key that only the commit checks (deferred): the batch's commit
    fails, and so does every write in it, each caller with the commit's error."""

    def poison(session: Session) -> None:
        session.execute(text("PRAGMA defer_foreign_keys = ON"))
        session.execute(
            text(
                "INSERT INTO idempotency_records (agent_id, key, fingerprint, state, created_at, expires_at)"
                " VALUES ('agt_nobody', 'k', 'f', 'completed', '2026-01-01', '2026-01-02')"
            )
        )

    results: dict[int, object] = {}
    with Database(settings) as db:

        def writer(number: int) -> None:
            try:
                results[number] = db.write(poison if number == 0 else _record(f"write-{number}"))
            except IntegrityError as exc:
                results[number] = exc

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(5)]
        with db._writers:
            for thread in threads:
                thread.start()
            _wait_for(lambda: len(db._group._queue) == 5)  # type: ignore[union-attr]
        for thread in threads:
            thread.join()
        assert all(isinstance(results[n], IntegrityError) for n in range(5)), results
        assert _names(db) == []
        # The database is usable afterwards.
        assert db.write(_record("after")) == "after"
        assert _names(db) == ["after"]


def _terminate_other_backends(database_url: str) -> int:
    """What a PostgreSQL restart does to the pool's connections: every one of them dies."""
    name = database_url.rsplit("/", 1)[1]
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        killed = connection.execute(
            text(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()) AS terminated"
            ),
            {"name": name},
        ).scalar_one()
    admin.dispose()
    return int(killed)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_idle_pooled_connections_that_died_are_replaced_unseen(settings: Settings) -> None:
    """A connection that sat idle in the pool is pinged before use; one the database dropped
    (a restart, a proxy's idle timeout) is replaced, and the transaction never sees it."""
    with Database(settings) as db:
        # Several pooled connections, all returned to the pool.
        barrier = threading.Barrier(4)

        def hold() -> None:
            with db.session() as session:
                session.execute(text("SELECT 1"))
                barrier.wait()

        threads = [threading.Thread(target=hold) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert _terminate_other_backends(settings.database_url.replace("+psycopg", "")) >= 4
        time.sleep(PING_IDLE_AFTER + 0.1)  # the connections are now "idle" in the pool's eyes

        for number in range(4):
            assert db.write(_record(f"after-restart-{number}")) == f"after-restart-{number}"
        with db.single_reads() as connection:
            assert connection.execute(text("SELECT 1")).scalar_one() == 1
        assert _names(db) == [f"after-restart-{n}" for n in range(4)]
