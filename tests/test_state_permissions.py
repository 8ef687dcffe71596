"""The outbox's own files are its uid's alone: 0700 directories, 0600 files, whatever the umask.

Every test runs under umask 000, the worst an operator's shell or service manager can hand the
outbox: anything not created private on purpose would come out world-writable.
"""

from __future__ import annotations

import os
import smtplib
import stat
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import text
from structlog.testing import capture_logs

from outbox.config import Settings
from outbox.db import Database
from outbox.mail.embedded import ensure_development_keys, local_sink_subdomains
from outbox.mail.environment import unsubscribe_secret
from outbox.mail.sending.sink import MaildirSink
from outbox.mail.service import mail_config
from outbox.migrations import upgrade
from outbox.runtime import Runtime
from outbox.state_files import private_directory, private_file


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.fixture
def embedded(tmp_path: Path) -> Settings:
    """The embedded defaults, inside a fresh directory: `.outbox/outbox.db` under `.outbox/`."""
    data = tmp_path / ".outbox"
    return Settings(database_url=f"sqlite:///{data}/outbox.db", data_dir=data, log_json=False)


def test_a_new_sqlite_database_and_its_data_directory_are_private(embedded: Settings) -> None:
    upgrade(embedded)
    db = Database(embedded)
    with db.session() as session:  # a write in WAL mode: SQLite makes -wal and -shm beside the file
        session.execute(text("CREATE TABLE IF NOT EXISTS probe (x INTEGER)"))
        session.execute(text("INSERT INTO probe VALUES (1)"))
    data = embedded.data_dir

    try:
        assert mode(data) == 0o700
        assert mode(data / "outbox.db") == 0o600
        assert (data / "outbox.db-wal").exists()
        assert (data / "outbox.db-shm").exists()
        assert mode(data / "outbox.db-wal") == 0o600
        assert mode(data / "outbox.db-shm") == 0o600
        assert sorted(oct(mode(entry)) for entry in data.iterdir()) == [oct(0o600)] * 3
    finally:
        db.dispose()


def test_missing_parents_of_the_database_are_created_private(tmp_path: Path) -> None:
    nested = tmp_path / "state" / "outbox" / "db"
    settings = Settings(database_url=f"sqlite:///{nested}/outbox.db", data_dir=tmp_path / "state", log_json=False)

    Database(settings).dispose()

    for directory in (tmp_path / "state", tmp_path / "state" / "outbox", nested):
        assert mode(directory) == 0o700, directory
    assert mode(nested / "outbox.db") == 0o600


def test_an_existing_world_readable_install_is_tightened_at_start_and_logged(embedded: Settings) -> None:
    upgrade(embedded)
    running = Database(embedded)  # an older server still holding the database open: -wal and -shm exist
    with running.session() as session:
        session.execute(text("CREATE TABLE IF NOT EXISTS probe (x INTEGER)"))
    data = embedded.data_dir
    files = ["outbox.db", "outbox.db-wal", "outbox.db-shm"]
    for name in files:
        (data / name).chmod(0o644)  # as an install made before this rule left them
    data.chmod(0o755)

    try:
        with capture_logs() as logs:
            Database(embedded).dispose()
    finally:
        running.dispose()

    assert mode(data) == 0o700
    tightened = {entry["path"]: entry for entry in logs if entry["event"] == "state.permissions_tightened"}
    assert set(tightened) == {str(data), *(str(data / name) for name in files)}
    assert tightened[str(data)]["was"] == "0o755"
    assert tightened[str(data / "outbox.db")]["now"] == "0o600"
    for name in files:
        assert tightened[str(data / name)]["was"] == "0o644"


def test_a_leftover_rollback_journal_is_tightened(embedded: Settings) -> None:
    journal = embedded.data_dir / "outbox.db-journal"
    embedded.data_dir.mkdir(mode=0o700)
    journal.write_bytes(b"")
    journal.chmod(0o644)

    Database(embedded).dispose()

    assert mode(journal) == 0o600


def test_a_private_install_is_left_alone_and_nothing_is_logged(embedded: Settings) -> None:
    Database(embedded).dispose()

    with capture_logs() as logs:
        Database(embedded).dispose()

    assert [entry for entry in logs if entry["event"] == "state.permissions_tightened"] == []


def test_the_data_directory_is_tightened_on_postgresql_too(
    make_settings: Callable[..., Settings], backend: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o777)
    data.chmod(0o777)
    settings = make_settings(data_dir=data)

    Database(settings).dispose()

    assert mode(data) == 0o700
    assert backend in {"sqlite", "postgresql"}


def test_the_maildir_and_every_message_in_it_are_private(tmp_path: Path) -> None:
    maildir = tmp_path / ".outbox" / "maildir"
    message = EmailMessage()
    message["From"] = "agent@agents.mail.example.com"
    message["To"] = "someone@example.net"
    message["Subject"] = "private"
    message.set_content("body")

    with MaildirSink(maildir) as sink:
        with smtplib.SMTP(sink.host, sink.port) as client:
            client.send_message(message)
        stored = sink.messages()

    assert len(stored) == 1
    assert mode(tmp_path / ".outbox") == 0o700
    assert mode(maildir) == 0o700
    for folder in ("tmp", "new", "cur"):
        assert mode(maildir / folder) == 0o700
    (file,) = list((maildir / "new").iterdir())
    assert mode(file) == 0o600


def test_an_existing_open_maildir_is_tightened(tmp_path: Path) -> None:
    maildir = tmp_path / "maildir"
    maildir.mkdir(mode=0o755)
    maildir.chmod(0o755)

    with MaildirSink(maildir):
        pass

    assert mode(maildir) == 0o700


def test_the_development_dkim_key_and_its_directory_are_private(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    runtime = make_runtime(dkim_key_dir=tmp_path / "keys-base")
    config = mail_config(runtime)

    created = ensure_development_keys(runtime, local_sink_subdomains(config, runtime.settings.mail_sink_port))

    assert created == ["agents.mail.example.com", "reminders.mail.example.com"]  # the development subdomains
    for domain in created:
        key = tmp_path / "keys-base" / ".outbox" / "dkim" / f"{domain}.key"
        assert mode(key) == 0o600
        assert mode(key.parent) == 0o700
        assert mode(key.parent.parent) == 0o700


def test_the_unsubscribe_secret_in_a_started_data_directory_is_private(embedded: Settings) -> None:
    Database(embedded).dispose()

    unsubscribe_secret(embedded)

    assert mode(embedded.data_dir) == 0o700
    assert mode(embedded.data_dir / "unsubscribe-secret") == 0o600


@pytest.mark.parametrize("existing", [0o777, 0o755, 0o750, 0o711])
def test_private_directory_tightens_every_open_mode(tmp_path: Path, existing: int) -> None:
    directory = tmp_path / "state"
    directory.mkdir()
    directory.chmod(existing)

    private_directory(directory)

    assert mode(directory) == 0o700


@pytest.mark.parametrize("existing", [0o666, 0o644, 0o640, 0o604])
def test_private_file_tightens_every_open_mode_and_keeps_the_content(tmp_path: Path, existing: int) -> None:
    path = tmp_path / "state-file"
    path.write_bytes(b"kept")
    path.chmod(existing)

    private_file(path)

    assert mode(path) == 0o600
    assert path.read_bytes() == b"kept"
