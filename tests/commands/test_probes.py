"""Isolation that proves itself: each profile's claims, checked from inside, before it runs.

The probe runs inside the profile as commands run (real bubblewrap, host uid, seccomp, the
egress bridge). On this machine's real profiles every claim holds; behind a bubblewrap that
silently drops `--seccomp` or the network namespace, the claim is named as failed, the
profile's tools refuse to run and say why (the tool, `/v1/tools`, `/readyz`), and
`outbox sandbox check` lists each claim and exits 1.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from outbox.cli.main import app
from outbox.commands import SandboxSettings
from outbox.commands.probes import CLAIMS, EGRESS_CLAIM, host_nameservers, isolation_problem, probe_profile
from outbox.config import get_settings
from outbox.toolkit.base import ExecutionContext, Failed
from tests.commands.broken_bwrap import broken_bwrap
from tests.commands.test_availability import echo_tool
from tests.support.sandbox_dirs import sandbox_readable_dir

CONTEXT = ExecutionContext(
    action_id="act_1", agent_id="agt_1", agent_name="ops-bot", on_behalf_of=None, idempotency_key="k-1", attempt=1
)


@pytest.fixture
def readable_dir() -> Iterator[Path]:
    """A directory the sandbox's host uid can read, for the profiles that mount one."""
    with sandbox_readable_dir("outbox-probe-test-") as path:
        yield path


@pytest.mark.parametrize("profile", ["default", "network", "readonly-repo", "terraform"])
def test_every_claim_holds_on_the_real_profiles(require_sandbox: None, readable_dir: Path, profile: str) -> None:
    settings = SandboxSettings(mounts={"repo": readable_dir, "terraform": readable_dir}, outbox_ports=(5432, 6379))

    report = probe_profile(settings, profile)

    egress = settings.profile(profile).egress
    assert [claim.name for claim in report.claims] == [*CLAIMS, *([EGRESS_CLAIM] if egress else [])]
    assert report.ok, report.problem()
    assert report.problem() is None


def test_a_bubblewrap_that_drops_seccomp_fails_the_seccomp_claim(require_sandbox: None, shared_dir: Path) -> None:
    settings = SandboxSettings(bwrap_path=broken_bwrap(shared_dir, "drop-seccomp"))

    report = probe_profile(settings, "default")

    failed = {claim.name: claim.detail for claim in report.claims if not claim.ok}
    assert list(failed) == ["seccomp filter active"]
    assert "Seccomp is not 2" in failed["seccomp filter active"]
    assert "ptrace returned success" in failed["seccomp filter active"]
    problem = report.problem()
    assert problem is not None
    assert problem.startswith("sandbox profile 'default' failed its isolation probe (seccomp filter active: ")


@pytest.mark.parametrize("profile", ["default", "network"])
def test_a_bubblewrap_that_shares_the_host_network_fails_the_network_claims(
    require_sandbox: None, shared_dir: Path, profile: str
) -> None:
    settings = SandboxSettings(bwrap_path=broken_bwrap(shared_dir, "share-net"))

    report = probe_profile(settings, profile)

    failed = {claim.name: claim.detail for claim in report.claims if not claim.ok}
    assert {"no route out except the proxy", "no DNS", "the outbox's ports unreachable"} <= set(failed)
    assert failed["no route out except the proxy"] == "shares the host's network namespace"
    assert "seccomp filter active" not in failed


def test_a_report_that_lacks_a_claim_fails(require_sandbox: None, shared_dir: Path) -> None:
    settings = SandboxSettings(bwrap_path=broken_bwrap(shared_dir, "other-command"))

    report = probe_profile(settings, "default")

    assert not report.ok
    failed = [claim for claim in report.claims if not claim.ok]
    assert [claim.name for claim in failed] == ["probe ran"]
    assert failed[0].detail == "no answer for: " + ", ".join(name for name in CLAIMS if name != "no DNS")


def test_a_tool_of_a_broken_profile_is_unavailable_and_refuses_to_run(require_sandbox: None, shared_dir: Path) -> None:
    tool = echo_tool(SandboxSettings(bwrap_path=broken_bwrap(shared_dir, "drop-seccomp")))

    reason = tool.unavailable_reason()
    outcome = tool.execute(CONTEXT, tool.parse_args({"word": "hello"}))

    assert reason is not None
    assert "failed its isolation probe (seccomp filter active" in reason
    assert isinstance(outcome, Failed)
    assert outcome.reason == f"not executed: {reason}"
    assert outcome.artifact["executed"] is False


def test_a_passed_probe_is_remembered_and_a_failed_one_probed_again_once_repaired(
    require_sandbox: None, shared_dir: Path
) -> None:
    wrapper = broken_bwrap(shared_dir, "drop-seccomp")
    broken = wrapper.read_text()
    settings = SandboxSettings(bwrap_path=wrapper)
    assert isolation_problem(settings, "default") is not None

    # The operator repairs the wrapper in place: the settings are the same.
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("bwrap")} "$@"\n')
    reused = isolation_problem(settings, "default", reuse_failure_seconds=3600)
    probed_again = isolation_problem(settings, "default", reuse_failure_seconds=0)
    # Broken again: the pass is remembered for these settings (a fresh probe would see it).
    wrapper.write_text(broken)
    remembered = isolation_problem(settings, "default", reuse_failure_seconds=0)

    assert reused is not None
    assert "seccomp filter active" in reused
    assert probed_again is None
    assert remembered is None
    assert not probe_profile(settings, "default").ok


def test_development_without_a_sandbox_has_nothing_to_probe(tmp_path: Path) -> None:
    settings = SandboxSettings(bwrap_path=tmp_path / "no-bwrap", allow_unsandboxed=True)

    assert isolation_problem(settings, "default") is None


def test_the_host_nameservers_are_read_from_resolv_conf(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# generated\nnameserver 10.0.0.2\nsearch example\nnameserver ::1\nnameserver\n")

    assert host_nameservers(resolv) == ["10.0.0.2", "::1"]
    assert host_nameservers(tmp_path / "absent") == []


@pytest.fixture
def cli_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    for name in ("OUTBOX_SANDBOX_REPO_DIR", "OUTBOX_SANDBOX_MOUNTS", "OUTBOX_DATA_DIR", "OUTBOX_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()  # `outbox sandbox check` reads settings once per process
    yield tmp_path
    get_settings.cache_clear()


def test_sandbox_check_prints_each_claim_of_each_profile(require_sandbox: None, cli_workdir: Path) -> None:
    result = CliRunner().invoke(app, ["sandbox", "check"])

    assert result.exit_code == 0, result.output
    for profile in ("default", "network"):
        for claim in CLAIMS:
            line = next(line for line in result.output.splitlines() if line.startswith(f"profile {profile}: {claim} "))
            assert " ok " in line
    assert "profile network: egress proxy answers" in result.output
    assert "seccomp filter (libseccomp)" in result.output
    assert "limits per action (rlimits)" in result.output or "limits per action (cgroup-v2)" in result.output


def test_sandbox_check_exits_1_naming_the_claim_that_fails(
    require_sandbox: None, cli_workdir: Path, shared_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTBOX_SANDBOX_BWRAP_PATH", str(broken_bwrap(shared_dir, "drop-seccomp")))

    result = CliRunner().invoke(app, ["sandbox", "check"])

    assert result.exit_code == 1
    line = next(
        line for line in result.output.splitlines() if line.startswith("profile default: seccomp filter active")
    )
    assert "FAILED" in line
    assert "tools of profile 'default' are unavailable" in result.output
