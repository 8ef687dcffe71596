"""`outbox sandbox check`: the isolation report, made by trying each kind of isolation."""

from __future__ import annotations

from pathlib import Path

from outbox.commands import SandboxSettings, check_isolation


def test_every_isolation_works_on_a_machine_with_bubblewrap(settings: SandboxSettings, require_sandbox: None) -> None:
    report = check_isolation(settings)

    rows = report.rows()
    assert report.sandbox_available
    assert all(len(row) == 3 for row in rows)
    # The settings name no directories, so only the profiles that need one are unavailable.
    assert [name for name, status, _ in rows if status != "ok"] == ["profile readonly-repo", "profile terraform"]
    names = [name for name, _, _ in rows]
    for expected in [
        "bubblewrap",
        "pid namespace",
        "network namespace",
        "full sandbox (profile default)",
        "seccomp filter (libseccomp)",
        "profile default: seccomp filter active",
        "profile network: no route out except the proxy",
        "profile network: egress proxy answers",
    ]:
        assert expected in names
    assert any(name.startswith("limits per action (") for name in names)
    assert report.claims_hold
    assert rows[-1] == ("command execution", "ok", "sandboxed")


def test_profiles_needing_an_unnamed_directory_are_reported_unavailable(settings: SandboxSettings) -> None:
    report = check_isolation(settings)

    assert set(report.unavailable_profiles) == {"readonly-repo", "terraform"}
    assert "OUTBOX_SANDBOX_REPO_DIR" in report.unavailable_profiles["readonly-repo"]
    assert "'terraform'" in report.unavailable_profiles["terraform"]
    assert "OUTBOX_SANDBOX_MOUNTS" in report.unavailable_profiles["terraform"]


def test_without_bubblewrap_the_report_says_commands_are_refused() -> None:
    report = check_isolation(SandboxSettings(bwrap_path=Path("/nonexistent/bwrap")))

    assert not report.sandbox_available
    assert ("bubblewrap", "FAILED", "bwrap not found or not executable") in report.rows()
    assert report.rows()[-1] == ("command execution", "FAILED", "refused (fail closed: no command runs)")


def test_the_report_shows_when_unsandboxed_development_mode_is_on() -> None:
    report = check_isolation(SandboxSettings(bwrap_path=Path("/nonexistent/bwrap"), allow_unsandboxed=True))

    assert report.execution_mode.startswith("UNSANDBOXED")
