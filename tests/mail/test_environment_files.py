"""Files mail's environment writes for a process are private from the first one on."""

from __future__ import annotations

from pathlib import Path

from outbox.config import Settings
from outbox.mail.environment import unsubscribe_secret


def test_a_data_directory_made_for_the_unsubscribe_secret_is_private(tmp_path: Path) -> None:
    # `outbox policy check` in a fresh clone loads the mail tool, which writes the secret first.
    settings = Settings(_env_file=None, data_dir=tmp_path / "fresh" / ".outbox")

    unsubscribe_secret(settings)

    assert (tmp_path / "fresh" / ".outbox").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "fresh").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "fresh" / ".outbox" / "unsubscribe-secret").stat().st_mode & 0o777 == 0o600
