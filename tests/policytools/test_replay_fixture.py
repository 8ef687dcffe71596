"""The recording the policy workflow replays (tests/fixtures/recordings/quickstart.jsonl): it
still reads with this version's export format, the shipped policies change none of its
decisions (the workflow starts green), and the workflow's replay step fails on loosening
changes exactly when the `policy-grant-reviewed` label is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from outbox.recordings.export import EXPORT_VERSION
from outbox.recordings.reader import read_export
from tests.conftest import POLICIES
from tests.policytools.test_replay import DENY_ONE_ALLOW_ANOTHER, candidate, replay

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "recordings" / "quickstart.jsonl"
WORKFLOW = ROOT / ".github" / "workflows" / "policy.yml"
REMAKE = "the fixture no longer matches: make it again with scripts/make_replay_fixture.py"


def test_the_fixture_reads_with_the_current_export_format() -> None:
    recording = read_export(FIXTURE)
    assert recording.header["version"] == EXPORT_VERSION, REMAKE
    assert recording.complete, REMAKE
    actions = {(a.agent, a.tool, a.decision["effect"], a.status) for a in recording.actions}
    # The variety the workflow's replay needs to notice a change: allowed, denied, approved and
    # run, waiting for approval, and mail to both development subdomains.
    assert ("reader-bot", "http.request", "allow", "succeeded") in actions
    assert ("reader-bot", "http.request", "deny", "denied") in actions
    assert ("writer-bot", "http.request", "approve", "succeeded") in actions
    assert ("writer-bot", "http.request", "approve", "awaiting_approval") in actions
    senders = {
        t["object"].split(":")[1].split("/")[0] for a in recording.actions if a.tool == "email.send" for t in a.targets
    }
    assert senders == {"agents.mail.example.com", "reminders.mail.example.com"}
    assert all(a.request.get("body") for a in recording.actions), "recorded as received over HTTP"


def test_the_shipped_policies_change_no_recorded_decision() -> None:
    code, out, err = replay("--policy", str(POLICIES), "--from", str(FIXTURE), "--fail-on", "any")
    assert code == 0, out + err
    assert out.startswith("7 recorded action(s) replayed") and "0 changed, 7 unchanged" in out


def _replay_step() -> dict[str, Any]:
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    steps = workflow["jobs"]["policy"]["steps"]
    step: dict[str, Any] = next(s for s in steps if "outbox policy replay" in s.get("run", ""))
    return step


def test_the_workflow_replays_the_fixture_into_the_job_summary() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    job = workflow["jobs"]["policy"]
    assert job["env"]["REPLAY_FIXTURE"] == FIXTURE.relative_to(ROOT).as_posix()
    # `on:` is YAML 1.1's boolean true.
    assert "tests/fixtures/recordings/**" in workflow[True]["pull_request"]["paths"]
    step = _replay_step()
    assert step["if"] == "${{ !cancelled() }}"
    assert "--format markdown" in step["run"] and '>> "$GITHUB_STEP_SUMMARY"' in step["run"]


def _run_step(workdir: Path, *, fail_on_grant: str) -> tuple[int, str, str]:
    """The step's script in bash, as the runner runs it, with `outbox` from this environment."""
    summary = workdir / "summary.md"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "FAIL_ON_GRANT": fail_on_grant,
        "REPLAY_FIXTURE": str(FIXTURE),
        "GITHUB_STEP_SUMMARY": str(summary),
        "OUTBOX_LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        ["bash", "-e", "-c", _replay_step()["run"]],
        check=False,
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout, summary.read_text(encoding="utf-8") if summary.exists() else ""


@pytest.mark.parametrize(("label", "exit_code"), [("yes", 1), ("no", 0)], ids=["no label", "grant reviewed"])
def test_the_workflow_step_fails_on_loosening_unless_the_grant_was_reviewed(
    tmp_path: Path, label: str, exit_code: int
) -> None:
    loosened = candidate(tmp_path, *DENY_ONE_ALLOW_ANOTHER)
    workdir = tmp_path / "checkout"
    workdir.mkdir()
    shutil.copytree(loosened, workdir / "policies")
    code, stdout, summary = _run_step(workdir, fail_on_grant=label)
    assert code == exit_code
    assert "### Policy replay: `policies`" in summary and "| deny-to-allow | 1 |" in summary
    assert ("::error title=policy replay::" in stdout) == (exit_code == 1)


def test_the_workflow_step_passes_the_shipped_policies(tmp_path: Path) -> None:
    shutil.copytree(POLICIES, tmp_path / "policies")
    code, _stdout, summary = _run_step(tmp_path, fail_on_grant="yes")
    assert code == 0
    assert "0 changed, 7 unchanged" in summary
