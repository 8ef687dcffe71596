"""`outbox serve`: one embedded process, or several API processes in production."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from outbox.cli.main import app
from outbox.config import get_settings


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    for name in ("OUTBOX_BROKER_URL", "OUTBOX_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OUTBOX_LOG_LEVEL", "WARNING")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize("processes", ["2", "8"])
def test_several_api_processes_need_a_broker(embedded: None, processes: str) -> None:
    result = CliRunner().invoke(app, ["serve", "--port", "9", "--workers", processes])
    assert result.exit_code == 2
    assert "--workers > 1 needs OUTBOX_BROKER_URL" in result.output


@pytest.mark.parametrize("processes", ["0", "65", "two"])
def test_the_number_of_api_processes_is_checked(embedded: None, processes: str) -> None:
    result = CliRunner().invoke(app, ["serve", "--port", "9", "--workers", processes])
    assert result.exit_code == 2
    assert "--workers" in result.output
