"""Alembic migrations, run by `outbox db upgrade` and by the embedded server at start."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from outbox.config import Settings
from outbox.state_files import secure_state

HERE = Path(__file__).parent


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    # `%` is ConfigParser interpolation syntax; URLs with percent-encoding must survive it.
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    config.attributes["settings"] = settings
    return config


@contextlib.contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Alembic narrates every run at INFO ("Context impl SQLiteImpl.", "Running upgrade …"): noise
    in the output of a CLI command or a server start. Warnings still show. Running `alembic`
    itself does not come through here and keeps its narration."""
    logger = logging.getLogger("alembic")
    previous = logger.level
    logger.setLevel(max(previous, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(previous)


def upgrade(settings: Settings, revision: str = "head") -> None:
    secure_state(settings)  # a new SQLite database is created 0600 in a 0700 directory
    with _quiet_alembic():
        command.upgrade(alembic_config(settings), revision)


def current(settings: Settings) -> str | None:
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
