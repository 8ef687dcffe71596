"""Database engine and sessions.

SQLite (embedded) and PostgreSQL (production) are both first-class. On SQLite every transaction
starts with `BEGIN IMMEDIATE`: writers queue on the database lock instead of failing later with
SQLITE_BUSY when a deferred read transaction tries to upgrade, which is what makes conditional
updates (claims, budget reservations, the audit chain) safe across threads and processes.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, Row, create_engine, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel

from outbox.config import Settings
from outbox.state_files import secure_state


def make_engine(settings: Settings) -> Engine:
    url = settings.database_url
    # The database holds every action and the API key hashes: 0600 in a 0700 data directory,
    # created so before SQLite opens it, tightened (and logged) if an older install left it open.
    secure_state(settings)
    if settings.is_sqlite:
        path = url.removeprefix("sqlite:///")
        if not path or path == ":memory:":
            # One in-memory database shared by every thread (tests and one-off tools only).
            engine = create_engine(url, connect_args={"check_same_thread": False}, poolclass=StaticPool)
        else:
            engine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=10, max_overflow=30
            )
        _configure_sqlite(engine)
        return engine
    engine = create_engine(url, pool_size=10, max_overflow=20)
    _ping_idle_connections(engine)
    return engine


# A pooled PostgreSQL connection idle longer than this is pinged before use (seconds).
PING_IDLE_AFTER = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    """Ping a connection before use only if it sat idle in the pool: a database restart (or a
    proxy closing idle connections) shows there, and the pool replaces it unseen. `pool_pre_ping`
    pings on every checkout, one round trip per transaction: 8-16% of a worker's time in the
    profiles. A connection returned less than a second ago is used as it is; if the database
    went away within that second, its first statement fails, SQLAlchemy sees the disconnect and
    discards the pool, and the failed transaction committed nothing (the sweeper or the client's
    retry with the same Idempotency-Key carries on)."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < PING_IDLE_AFTER:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out another (SQLAlchemy retries).
            raise DisconnectionError from exc


_IDLE_SINCE = "outbox_idle_since"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so that we can issue BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        raw = conn.connection.dbapi_connection
        if raw.in_transaction:
            # A COMMIT that failed (a deferred constraint, a full disk) leaves SQLite's transaction
            # open on a connection the pool took back: end it before beginning anew.
            raw.rollback()
        options = conn.get_execution_options()
        if options.get(_SINGLE_READS):
            # No transaction: each statement is its own, with its own consistent snapshot.
            return
        # Readers take no write lock; they see a consistent WAL snapshot.
        conn.exec_driver_sql("BEGIN" if options.get(_READ_ONLY) else "BEGIN IMMEDIATE")


_READ_ONLY = "outbox_read_only"
_SINGLE_READS = "outbox_single_reads"

# Threads that drain the queue (workers) rather than fill it (API requests); see WriterQueue.
_draining = threading.local()


@contextlib.contextmanager
def draining() -> Iterator[None]:
    """Mark the current thread's writes as the queue's drain: they go first on SQLite."""
    _draining.active = True
    try:
        yield
    finally:
        _draining.active = False


class WriterQueue:
    """The writers of one process, one at a time, in a fair order; reentrant.

    A plain lock is unfair: under load the API's request threads, many and short, keep winning it,
    the workers that execute what they accepted starve, and the queue of accepted actions grows
    without bound. Here the lock is handed over in arrival order, except that a waiting drain
    (a worker, see `draining`) goes before waiting submissions, up to `DRAIN_BURST` times in a
    row: a worker's writes never wait behind a crowd of submissions, and a submission still never
    waits for ever. (Bounding the queue itself is the embedded dispatcher's backpressure.)
    """

    DRAIN_BURST = 4

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._owner: int | None = None
        self._depth = 0
        self._drains: collections.deque[threading.Lock] = collections.deque()
        self._fills: collections.deque[threading.Lock] = collections.deque()
        self._drain_streak = 0

    def __enter__(self) -> WriterQueue:
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                self._depth += 1
                return self
            if self._owner is None:
                self._owner, self._depth = me, 1
                return self
            gate = threading.Lock()
            gate.acquire()
            (self._drains if getattr(_draining, "active", False) else self._fills).append(gate)
        # Released by the previous owner, who reserved the lock for this thread (_HANDED_OVER).
        gate.acquire()
        with self._mutex:
            self._owner, self._depth = me, 1
        return self

    def __exit__(self, *_exc: object) -> None:
        with self._mutex:
            self._depth -= 1
            if self._depth:
                return
            gate = self._next_waiter()
            # Reserved for the waiter being woken: newcomers queue behind it.
            self._owner = _HANDED_OVER if gate is not None else None
        if gate is not None:
            gate.release()

    def _next_waiter(self) -> threading.Lock | None:
        if self._drains and (not self._fills or self._drain_streak < self.DRAIN_BURST):
            self._drain_streak += 1
            return self._drains.popleft()
        self._drain_streak = 0
        return self._fills.popleft() if self._fills else None


# No thread has this identity: the lock is between its owners.
_HANDED_OVER = -1

T = TypeVar("T")


class _Write(Generic[T]):
    """One job of a group commit, and what became of it."""

    def __init__(self, job: Callable[[Session], T]) -> None:
        self.job = job
        # Set when the job is done, or when its thread is to lead the next batch.
        self.wake = threading.Event()
        self.done = False
        self.value: T | None = None
        self.error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class _GroupCommit:
    """Group commit with a leader (see `Database.write`).

    The first writer to arrive leads: it takes the write lock, runs every job queued so far in
    one transaction, commits, wakes their threads, and hands the lead to the oldest job that
    arrived meanwhile. The others sleep on their own event until their job is done: no one but
    the leader queues for the lock, so a batch costs one lock hand-over, not one per job.
    """

    # A bound on one batch, so that one transaction never holds the lock for long.
    MAX_BATCH = 64

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._mutex = threading.Lock()
        self._queue: collections.deque[_Write[Any]] = collections.deque()
        self._leading = False

    def write(self, job: Callable[[Session], T], lock: contextlib.AbstractContextManager[object]) -> T:
        entry = _Write(job)
        with self._mutex:
            self._queue.append(entry)
            leads = not self._leading
            self._leading = True
        if not leads:
            entry.wake.wait()
            if entry.done:
                return entry.outcome()
        # This thread leads; its job is the oldest queued, so it is in this batch.
        with lock:
            self._commit_batch()
        with self._mutex:
            if self._queue:
                self._queue[0].wake.set()
            else:
                self._leading = False
        return entry.outcome()

    def _commit_batch(self) -> None:
        """Run the queued jobs in one transaction, each in a savepoint, and commit."""
        with self._mutex:
            batch = [self._queue.popleft() for _ in range(min(self.MAX_BATCH, len(self._queue)))]
        try:
            with Session(self._engine, expire_on_commit=False) as session:
                for entry in batch:
                    _run_in_savepoint(session, entry, alone=len(batch) == 1)
                session.commit()
        except BaseException as exc:
            # Nothing of the batch was committed: every job that had succeeded fails with it.
            for entry in batch:
                if entry.error is None:
                    entry.error = exc
        finally:
            for entry in batch:
                entry.done = True
                entry.wake.set()


def _run_in_savepoint(session: Session, entry: _Write[Any], *, alone: bool) -> None:
    if alone:
        # No other job to protect: the transaction itself rolls back if it fails.
        entry.value = entry.job(session)
        return
    savepoint = session.begin_nested()
    try:
        entry.value = entry.job(session)
    except Exception as exc:
        savepoint.rollback()
        entry.error = exc
    else:
        savepoint.commit()


class Database:
    """One engine per process; sessions are short and always end in commit or rollback."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings)
        self._read_engine = self.engine.execution_options(**{_READ_ONLY: True})
        # Autocommit on PostgreSQL (no BEGIN/ROLLBACK round trips); on SQLite the "begin" listener
        # skips BEGIN (pysqlite's own isolation handling stays off, as for every connection).
        self._single_reads_engine = (
            self.engine.execution_options(**{_SINGLE_READS: True})
            if settings.is_sqlite
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        # SQLite admits one writer at a time, and a writer that finds the lock taken sleeps in
        # SQLite's busy handler (up to 100 ms a nap), which starves unlucky requests for seconds
        # under load. Writers of this process queue on a lock instead, granted in arrival order,
        # with workers first (see WriterQueue). Other processes (the CLI) still wait in
        # busy_timeout.
        self._writers: contextlib.AbstractContextManager[object] = (
            WriterQueue() if settings.is_sqlite else contextlib.nullcontext()
        )
        self._group = _GroupCommit(self.engine) if settings.is_sqlite else None

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        with self._writers, Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def write(self, job: Callable[[Session], T]) -> T:
        """Run `job` in a write transaction, commit, and return what it returned.

        On SQLite, the writes that arrive while another batch commits are committed together,
        in one transaction (group commit: one BEGIN, one audit tail, one commit for the batch),
        each in its own savepoint, so a job that raises rolls back alone and its caller gets the
        exception. On PostgreSQL, where writers do not exclude each other, it is `session()`.
        `job` must be short and must not wait on anything but the database.
        """
        if self._group is None:
            with self.session() as session:
                return job(session)
        return self._group.write(job, self._writers)

    @contextlib.contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reads only: on SQLite it does not queue behind writers."""
        with Session(self._read_engine, expire_on_commit=False) as session:
            try:
                yield session
            finally:
                session.rollback()

    @contextlib.contextmanager
    def single_reads(self) -> Iterator[Connection]:
        """A connection for independent one-statement reads on the hot path (authentication, a
        stored idempotent answer): no ORM session, no transaction around the statements, no write
        lock. Each statement sees a consistent snapshot of its own; use `read_session` when two
        reads must agree with each other."""
        with self._single_reads_engine.connect() as connection:
            yield connection

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def dispose(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.dispose()


def insert_or_ignore(session: Session, table: type[SQLModel], rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert the rows whose keys are new, skip the others; return how many were inserted.

    `ON CONFLICT DO NOTHING` on both backends, so concurrent writers of the same row never fail
    on a unique key. Counted with RETURNING: a multi-row insert's rowcount is not reliable on
    every driver.
    """
    return len(inserted_rows(session, table, rows))


def inserted_rows(
    session: Session, table: type[SQLModel], rows: Sequence[Mapping[str, Any]], returning: Sequence[str] = ()
) -> Sequence[Row[Any]]:
    """`insert_or_ignore`, answering with the inserted rows' `returning` columns (the primary
    key by default): which of the rows were new.

    The statement is built once per table, backend and columns, and runs on the session's
    connection (no ORM bulk-insert layer): this is on the submission and mail hot paths.
    """
    if not rows:
        return []
    statement = _ignoring_insert(table, session.get_bind().dialect.name, tuple(returning))
    session.flush()  # what the ORM holds goes first, as `session.execute` would do
    return session.connection().execute(statement, [dict(row) for row in rows]).all()


@functools.cache
def _ignoring_insert(table: type[SQLModel], dialect: str, returning: tuple[str, ...]) -> Any:
    core = table.__table__  # type: ignore[attr-defined]
    if dialect == "postgresql":
        statement: Any = pg_insert(core).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite_insert(core).on_conflict_do_nothing()
    else:  # pragma: no cover - only the two supported backends exist
        raise NotImplementedError(f"insert_or_ignore on {dialect}")
    columns = [core.c[name] for name in returning] or list(core.primary_key.columns)
    return statement.returning(*columns)
