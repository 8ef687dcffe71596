"""Command tools through the whole pipeline: submission (dry run, blast radius), real sandboxed
execution, and the exact record of what ran."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from outbox.actions.service import parse_envelope, submit
from outbox.agents.service import authenticate
from outbox.commands.sandbox import SandboxSettings, sandbox_problem
from outbox.errors import ValidationFailed
from outbox.execution.service import run_action
from outbox.runtime import Runtime
from tests.support.agents import make_agent
from tests.support.calls import load, submit_call
from tests.support.dispatchers import RecordingDispatcher


@pytest.fixture
def repo() -> Iterator[Path]:
    """A git repository the sandbox's unprivileged uid can read."""
    if (problem := sandbox_problem(SandboxSettings())) is not None:
        pytest.skip(f"sandbox unavailable: {problem}")
    path = Path(tempfile.mkdtemp(prefix="outbox-repo-"))
    (path / "README.md").write_text("hello\n")
    git = ["git", "-C", str(path), "-c", "user.name=Ada", "-c", "user.email=ada@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "README.md"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first commit"], check=True)
    for entry in [path, *path.rglob("*")]:
        entry.chmod(0o755 if entry.is_dir() else 0o644)
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def command_runtime(make_runtime: Callable[..., Runtime], repo: Path) -> Runtime:
    return make_runtime(
        RecordingDispatcher(),
        sandbox_mounts={"repo": repo},
        sandbox_secrets={"kubeconfig": SecretStr("apiVersion: v1\nkind: Config\n")},
        sandbox_destinations={
            name: {"host": f"{name}.cluster.test", "port": 6443} for name in ("staging", "production")
        },
    )


def test_a_read_only_git_tool_runs_in_the_sandbox_and_is_recorded_exactly(command_runtime: Runtime) -> None:
    key = make_agent(command_runtime.db, "repo-bot", ["repo-reader"])
    action_id = submit_call(command_runtime, key, "git.log", {"max_count": 5})
    assert load(command_runtime, action_id).status == "queued"

    assert run_action(command_runtime, action_id) == "succeeded"
    action = load(command_runtime, action_id)
    assert action.artifact is not None
    assert action.response is not None
    assert action.artifact["argv"][:5] == ["git", "-c", "safe.directory=/repo", "-C", "/repo"]
    assert "--max-count=5" in action.artifact["argv"]
    assert action.artifact["unsandboxed"] is False
    assert "network-namespace" in action.artifact["isolation"]
    assert action.response["exit_code"] == 0
    assert "Ada first commit" in action.response["stdout"]


def test_shell_text_in_a_parameter_is_refused_before_anything_runs(command_runtime: Runtime) -> None:
    key = make_agent(command_runtime.db, "sneaky", ["repo-reader"])
    with command_runtime.db.session() as session:
        agent = authenticate(session, key)
    assert agent is not None
    for path in ["; rm -rf /", "$(id)", "`id`", "../etc", "--all", "a\nb"]:
        with pytest.raises(ValidationFailed) as raised:
            submit(
                command_runtime,
                agent,
                parse_envelope({"tool": "fs.list_directory", "args": {"path": path}}),
                f"k-{path}",
                {},
            )
        assert raised.value.errors[0]["field"] == "args.path", path


def test_more_targets_than_the_bound_go_to_a_human_with_the_dry_run_shown(
    command_runtime: Runtime, policy_dir: Path
) -> None:
    # A role that policy lets delete staging namespaces without a human: only the tool's bound
    # on targets per action can send this call to an approver.
    with (policy_dir / "rules.csv").open("a") as rules:
        rules.write("p, role:k8s-janitor, k8s:staging/namespace/*, delete, allow\n")
    assert command_runtime.policy.reload()[0]
    key = make_agent(command_runtime.db, "cleaner", ["k8s-janitor"])
    names = ["feature-branch-login", "feature-branch-search", "old-branch-cleanup", "integration-branch-env"]
    action_id = submit_call(command_runtime, key, "k8s.delete_namespaces", {"cluster": "staging", "names": names})

    action = load(command_runtime, action_id)
    assert action.status == "awaiting_approval"
    assert action.decision_effect == "approve"
    # The bound is named, and the reason says policy alone would have allowed it.
    assert "would touch 4 targets in one action; above 3 a human approves" in (action.status_reason or "")
    assert "policy alone would allow it" in (action.status_reason or "")
    assert [t["object"] for t in action.targets] == [f"k8s:staging/namespace/{n}" for n in names]
    assert action.preview is not None
    dry_run = action.preview["dry_run"]
    assert dry_run["argv"][-1] == "--dry-run=server"
    assert dry_run["unsandboxed"] is False
    assert "exit_code" in dry_run  # no kubectl on this machine: the failure is shown to the approver
    assert command_runtime.dispatcher.published == []  # type: ignore[attr-defined]


def test_three_targets_within_the_bound_run_without_a_human(command_runtime: Runtime, policy_dir: Path) -> None:
    with (policy_dir / "rules.csv").open("a") as rules:
        rules.write("p, role:k8s-janitor, k8s:staging/namespace/*, delete, allow\n")
    assert command_runtime.policy.reload()[0]
    key = make_agent(command_runtime.db, "cleaner-3", ["k8s-janitor"])
    names = ["feature-branch-login", "feature-branch-search", "old-branch-cleanup"]
    action_id = submit_call(command_runtime, key, "k8s.delete_namespaces", {"cluster": "staging", "names": names})
    action = load(command_runtime, action_id)
    assert action.status == "queued"
    assert action.decision_effect == "allow"


def test_a_denied_command_runs_not_even_its_dry_run(command_runtime: Runtime) -> None:
    key = make_agent(command_runtime.db, "prod-cleaner", ["k8s-operator"])
    action_id = submit_call(command_runtime, key, "k8s.delete_namespace", {"cluster": "production", "name": "payments"})
    action = load(command_runtime, action_id)
    assert action.status == "denied"
    assert action.preview is not None
    assert "dry_run" not in action.preview


def test_a_definition_change_after_submission_runs_nothing(command_runtime: Runtime) -> None:
    key = make_agent(command_runtime.db, "repo-bot-2", ["repo-reader"])
    action_id = submit_call(command_runtime, key, "git.log", {"max_count": 3})
    tools = command_runtime.settings.policy_dir / "tools" / "quickstart.yaml"
    tools.write_text(tools.read_text().replace("--date=short", "--date=iso"))
    assert command_runtime.policy.reload()[0]

    assert run_action(command_runtime, action_id) == "failed"
    action = load(command_runtime, action_id)
    assert "definition changed since submission" in (action.status_reason or "")
    assert action.response is None
