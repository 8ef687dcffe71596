"""What CLI commands run against: the configured database (migrated on first use when it is the
embedded SQLite file) and, for commands that decide things, the full runtime."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from outbox.config import get_settings
from outbox.db import Database
from outbox.runtime import Runtime


def _migrate_embedded() -> None:
    settings = get_settings()
    if settings.is_sqlite:
        # The embedded database is created on first use; PostgreSQL is migrated explicitly.
        from outbox.migrations import upgrade

        upgrade(settings)


def cli_database() -> Database:
    """A database handle; use it as a context manager so that connections are closed."""
    _migrate_embedded()
    return Database(get_settings())


@contextlib.contextmanager
def cli_runtime() -> Iterator[Runtime]:
    """The runtime (policy, tools, database) without workers: the running server's sweeper
    picks up whatever a command queues."""
    _migrate_embedded()
    runtime = Runtime.build(get_settings(), decides_submissions=False)
    try:
        yield runtime
    finally:
        runtime.db.dispose()
