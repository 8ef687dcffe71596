"""Shared fixtures: real databases (SQLite and PostgreSQL), a real runtime, real HTTP servers.

PostgreSQL tests run against 127.0.0.1:5432 in a database created for this test run. They are
skipped, with the reason printed, only when PostgreSQL is unreachable; CI sets
OUTBOX_TEST_REQUIRE_POSTGRES=1 so that an unreachable server fails the run instead.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlmodel import SQLModel

from outbox.config import Settings
from outbox.migrations import upgrade
from outbox.runtime import Dispatcher, Runtime
from outbox.toolkit.registry import ToolProvider
from outbox.tools.providers import BUILTIN_PROVIDERS
from tests.support.dispatchers import RecordingDispatcher
from tests.support.http_target import TargetServer

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "policies"
PG_ADMIN_URL = os.environ.get("OUTBOX_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _postgres_reachable() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


@pytest.fixture(scope="session")
def redis_available() -> None:
    """Skip (visibly) when Redis is unreachable, unless OUTBOX_TEST_REQUIRE_REDIS=1 (CI)."""
    import redis  # noqa: PLC0415 - the Redis client loads only for the tests that ask for Redis

    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("OUTBOX_TEST_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis required but unreachable at 127.0.0.1:6379: {exc}")
        pytest.skip(f"Redis unreachable at 127.0.0.1:6379 ({exc}); broker tests skipped")
    finally:
        client.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A fresh PostgreSQL database for this run; yields its URL and drops it afterwards."""
    problem = _postgres_reachable()
    if problem is not None:
        if os.environ.get("OUTBOX_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required but unreachable at {PG_ADMIN_URL}: {problem}")
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN_URL} ({problem}); PostgreSQL tests skipped")
    name = f"outbox_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(Settings(database_url=url))
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate_postgres(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database, copied for each test (migrating once keeps tests fast)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "outbox.db"
    upgrade(Settings(database_url=f"sqlite:///{path}"))
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "postgresql":
        url: str = request.getfixturevalue("postgres_server")
        _truncate_postgres(url)
        return url
    template: Path = request.getfixturevalue("sqlite_template")
    target = tmp_path / "outbox.db"
    shutil.copy(template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A private copy of the shipped policies, so tests may edit it."""
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    return target


@pytest.fixture
def make_settings(database_url: str, policy_dir: Path, tmp_path: Path) -> Callable[..., Settings]:
    def build(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": database_url,
            "policy_dir": policy_dir,
            "data_dir": tmp_path / "data",
            "policy_watch": False,
            "sweep_interval_seconds": 0.2,
            "republish_after_seconds": 1.0,
            "retry_base_seconds": 0.1,
            "retry_max_seconds": 0.5,
            "log_json": False,
            "log_level": "WARNING",
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def make_runtime(settings: Settings) -> Iterator[Callable[..., Runtime]]:
    built: list[Runtime] = []

    def build(
        dispatcher: Dispatcher | None = None,
        *,
        providers: Sequence[ToolProvider] = BUILTIN_PROVIDERS,
        **overrides: object,
    ) -> Runtime:
        active = settings.model_copy(update=overrides) if overrides else settings
        runtime = Runtime.build(active, dispatcher, providers=providers)
        built.append(runtime)
        return runtime

    yield build
    for runtime in built:
        stop = getattr(runtime.dispatcher, "stop", None)
        if callable(stop):
            stop()
        runtime.db.dispose()


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    """A runtime whose dispatcher records publications instead of executing them."""

    return make_runtime(RecordingDispatcher())


@pytest.fixture
def target_server() -> Iterator[TargetServer]:
    server = TargetServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def empty_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables yet, for migration tests: a file for SQLite, a new database for
    PostgreSQL (dropped afterwards)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    request.getfixturevalue("postgres_server")  # skips (or fails in CI) when PostgreSQL is unreachable
    name = f"outbox_migration_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
