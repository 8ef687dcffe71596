"""`outbox serve`: one embedded process, or several API processes in production."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from outbox.cli.main import app
from outbox.cli.serve import plan_serve
from outbox.commands.provider import sandbox_settings
from outbox.config import Settings, get_settings
from tests.conftest import POLICIES
from tests.support.processes import OUTBOX, free_port, outbox_env


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


# --- Refused at once: one line, a non-zero exit, nothing created --------------------------------


def _serve(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OUTBOX, "serve", *args],
        env=outbox_env(**env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def fresh_copy(tmp_path: Path) -> Path:
    shutil.copytree(POLICIES, tmp_path / "policies")
    return tmp_path


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield int(other.getsockname()[1])


def _refused(result: subprocess.CompletedProcess[str], workdir: Path) -> str:
    assert result.returncode != 0
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert not (workdir / ".outbox").exists()  # not migrated, nothing generated
    return line


@pytest.mark.slow
def test_a_second_serve_on_a_taken_port_says_so_in_one_line_before_creating_anything(
    fresh_copy: Path, taken_port: int
) -> None:
    line = _refused(_serve(fresh_copy, "--port", str(taken_port), "--sink-port", str(free_port())), fresh_copy)
    assert f"127.0.0.1:{taken_port} is already in use" in line
    assert "--port" in line


@pytest.mark.slow
def test_a_taken_sink_port_is_refused_too(fresh_copy: Path, taken_port: int) -> None:
    line = _refused(_serve(fresh_copy, "--port", str(free_port()), "--sink-port", str(taken_port)), fresh_copy)
    assert f"mail sink's port 127.0.0.1:{taken_port} is already in use" in line
    assert "--sink-port" in line


@pytest.mark.slow
def test_the_sink_port_setting_is_checked_like_the_flag(fresh_copy: Path, taken_port: int) -> None:
    result = _serve(fresh_copy, "--port", str(free_port()), OUTBOX_MAIL_SINK_PORT=str(taken_port))
    assert f"127.0.0.1:{taken_port}" in _refused(result, fresh_copy)


@pytest.mark.slow
def test_serve_outside_a_clone_says_where_it_looked_for_policies(tmp_path: Path) -> None:
    line = _refused(_serve(tmp_path, "--port", str(free_port())), tmp_path)
    assert f"no policy directory at {tmp_path.resolve() / 'policies'}" in line
    assert "OUTBOX_POLICY_DIR" in line


@pytest.mark.slow
def test_a_mail_config_that_does_not_load_stops_serve_before_it_migrates(fresh_copy: Path) -> None:
    mail = fresh_copy / "policies" / "mail.yaml"
    mail.write_text(
        mail.read_text().replace(
            "  - domain: agents.mail.example.com\n",
            "  - domain: agents.mail.example.com\n    relay: {host: smtp.example.net}\n",
            1,
        )
    )
    result = _serve(fresh_copy, "--port", str(free_port()))
    assert result.returncode != 0
    assert "a development subdomain delivers only to the local sink" in result.stderr
    assert not (fresh_copy / ".outbox").exists()


def test_the_port_serve_listens_on_is_one_the_sandbox_probe_proves_unreachable(tmp_path: Path) -> None:
    shutil.copytree(POLICIES, tmp_path / "policies")
    settings = Settings(policy_dir=tmp_path / "policies", data_dir=tmp_path / ".outbox")
    port = free_port()

    plan = plan_serve(settings, port=port, sink_port=None)

    assert plan.settings.api_port == port
    reserved = sandbox_settings(plan.settings).outbox_ports
    assert port in reserved
    assert settings.api_port not in reserved
