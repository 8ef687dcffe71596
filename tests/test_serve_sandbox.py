"""`outbox serve` says at start, in one line, whether command tools can run confined here.

Inside a container where bubblewrap cannot create namespaces the line says the tools are
refused (fail closed) instead of leaving it to the first failed action; development that
allows unsandboxed runs is named as such; production refuses that setting outright.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from outbox.cli.serve import banner, plan_serve, sandbox_status
from outbox.config import Settings, UnsafeConfigurationError
from tests.conftest import POLICIES


def serve_settings(tmp_path: Path, **changes: object) -> Settings:
    return Settings(policy_dir=POLICIES, data_dir=tmp_path / "data", **changes)  # type: ignore[arg-type]


def test_with_a_working_sandbox_the_banner_names_the_confinement(tmp_path: Path) -> None:
    plan = plan_serve(serve_settings(tmp_path), port=8000, sink_port=None)

    lines = banner(plan, host="127.0.0.1", port=8000, workers=1, mcp=False)

    line = next(line for line in lines if line.startswith("  sandbox "))
    assert "bubblewrap + seccomp, limits by " in line
    assert "each profile probed before its first command" in line


def test_where_bubblewrap_cannot_work_the_banner_says_tools_are_refused(tmp_path: Path) -> None:
    status = sandbox_status(serve_settings(tmp_path, sandbox_bwrap_path=tmp_path / "no-bwrap"))

    assert status.startswith("UNAVAILABLE, command tools refused (fail closed): bubblewrap (bwrap) is not installed")
    assert "outbox sandbox check" in status


def test_development_running_unsandboxed_is_named(tmp_path: Path) -> None:
    settings = serve_settings(tmp_path, sandbox_bwrap_path=tmp_path / "no-bwrap", allow_unsandboxed=True)

    assert sandbox_status(settings).startswith("UNSANDBOXED (development only): bubblewrap (bwrap)")


def test_production_refuses_unsandboxed_commands(tmp_path: Path) -> None:
    settings = serve_settings(tmp_path, environment="production", allow_unsandboxed=True)

    with pytest.raises(UnsafeConfigurationError, match="OUTBOX_ALLOW_UNSANDBOXED is for development only"):
        settings.check_production_safety()
