"""No sandbox mount shows the outbox's own state, however the mount is spelled; nothing is mounted unnamed.

The outbox's state here lives in a fresh working directory: `.outbox/` (the data directory with
the SQLite database), a `.env` settings file, a secrets directory and a Maildir outside the data
directory. Each test names a mount some way and expects the start to be refused with the mount's
name and the reason, or accepted when the directory holds none of it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from outbox.cli.main import app
from outbox.commands import SandboxConfigurationError, SandboxSettings, load_command_tools
from outbox.commands.provider import sandbox_settings
from outbox.config import Settings, get_settings
from outbox.runtime import Runtime
from outbox.toolkit.base import ExecutionContext, Failed
from tests.commands.conftest import SHIPPED_TOOLS
from tests.commands.test_sandbox import python


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory laid out like an embedded install, with a repository beside the state."""
    monkeypatch.chdir(tmp_path)
    for name in ("OUTBOX_SANDBOX_REPO_DIR", "OUTBOX_SANDBOX_MOUNTS", "OUTBOX_DATA_DIR", "OUTBOX_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".outbox" / "dkim").mkdir(parents=True)
    (tmp_path / ".outbox" / "outbox.db").write_bytes(b"")
    (tmp_path / ".env").write_text("OUTBOX_ADMIN_TOKEN=not-for-agents\n")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "mail").mkdir()
    (tmp_path / "repo" / "src").mkdir(parents=True)
    (tmp_path / "link-to-data").symlink_to(tmp_path / ".outbox")
    (tmp_path / "repo" / "escape").symlink_to(tmp_path)
    get_settings.cache_clear()  # `outbox sandbox check` reads settings once per process
    yield tmp_path
    get_settings.cache_clear()


def configured(mount: str | Path, **changes: object) -> Settings:
    return Settings.model_validate(
        {"sandbox_secrets_dir": "secrets", "mail_sink_dir": "mail", "sandbox_mounts": {"repo": str(mount)}, **changes}
    )


@pytest.mark.parametrize(
    ("spelling", "relation", "state"),
    [
        (".outbox", "is", ".outbox"),
        (".outbox/", "is", ".outbox"),
        ("./.outbox/.", "is", ".outbox"),
        ("repo/../.outbox", "is", ".outbox"),
        ("link-to-data", "is", ".outbox"),
        ("{abs}/.outbox", "is", ".outbox"),
        (".", "contains", ".outbox"),
        ("{abs}", "contains", ".outbox"),
        ("repo/..", "contains", ".outbox"),
        ("repo/escape", "contains", ".outbox"),
        ("/", "contains", ".outbox"),
        (".outbox/dkim", "is inside", ".outbox"),
        ("link-to-data/dkim", "is inside", ".outbox"),
        ("secrets", "is", "secrets"),
        ("mail", "is", "mail"),
    ],
)
def test_a_mount_of_the_outbox_s_state_is_refused_at_start(
    workdir: Path, spelling: str, relation: str, state: str
) -> None:
    settings = configured(spelling.format(abs=workdir))

    with pytest.raises(SandboxConfigurationError) as refused:
        sandbox_settings(settings)

    message = str(refused.value)
    assert "mount 'repo'" in message
    assert f"{relation} the outbox's own state {workdir / state}" in message
    assert "name a directory that holds none of the outbox's data" in message


def test_the_database_file_counts_as_state_wherever_it_lives(workdir: Path) -> None:
    (workdir / "elsewhere").mkdir()
    settings = configured("elsewhere", database_url="sqlite:///elsewhere/outbox.db")

    with pytest.raises(SandboxConfigurationError, match=r"contains the outbox's own state .*elsewhere/outbox\.db"):
        sandbox_settings(settings)


def test_the_settings_file_counts_as_state(workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    state = tmp_path_factory.mktemp("state")  # every other piece of state lives elsewhere
    settings = configured(
        ".",
        data_dir=str(state),
        database_url=f"sqlite:///{state}/outbox.db",
        sandbox_secrets_dir=None,
        mail_sink_dir=str(state / "mail"),
    )

    with pytest.raises(SandboxConfigurationError, match=r"contains the outbox's own state .*/\.env"):
        sandbox_settings(settings)


@pytest.mark.parametrize("spelling", ["repo", "repo/", "./repo", "{abs}/repo", "repo/src/.."])
def test_a_directory_holding_none_of_the_state_is_mounted(workdir: Path, spelling: str) -> None:
    sandbox = sandbox_settings(configured(spelling.format(abs=workdir)))

    assert os.path.realpath(sandbox.mounts["repo"]) == str(workdir / "repo")


def test_a_symlink_swapped_after_start_is_refused_before_anything_runs(workdir: Path, require_sandbox: None) -> None:
    (workdir / "current").symlink_to(workdir / "repo")
    sandbox = sandbox_settings(configured("current"))
    (workdir / "current").unlink()
    (workdir / "current").symlink_to(workdir / ".outbox")

    with pytest.raises(SandboxConfigurationError, match=r"mount 'repo' \(.*current -> .*\.outbox\) is the outbox's"):
        python("print('ran')", sandbox, profile="readonly-repo")


def test_nothing_is_mounted_unless_the_operator_names_it(workdir: Path) -> None:
    sandbox = sandbox_settings(Settings())

    assert sandbox.mounts == {}
    problem = sandbox.profile_problem("readonly-repo")
    assert problem is not None
    assert "needs the host directory 'repo', which the operator has not named" in problem
    assert "OUTBOX_SANDBOX_REPO_DIR" in problem


def test_the_repo_mount_is_the_directory_the_operator_names(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOX_SANDBOX_REPO_DIR", "repo")

    sandbox = sandbox_settings(Settings())

    assert sandbox.mounts == {"repo": workdir / "repo"}
    assert sandbox.profile_problem("readonly-repo") is None


def test_tools_needing_an_unnamed_directory_are_listed_as_unavailable_and_run_nothing(
    workdir: Path, require_sandbox: None
) -> None:
    sandbox = sandbox_settings(Settings())
    tools = {tool.name: tool for tool in load_command_tools(SHIPPED_TOOLS).build_tools(sandbox)}
    listing = tools["fs.list_directory"]

    context = ExecutionContext(
        action_id="a-1", agent_id="g-1", agent_name="agent", on_behalf_of=None, idempotency_key="k-1", attempt=1
    )
    outcome = listing.execute(context, listing.parse_args({"path": "."}))

    assert "needs the host directory 'repo', which the operator has not named" in (listing.unavailable_reason() or "")
    assert "OUTBOX_SANDBOX_REPO_DIR" in (listing.unavailable_reason() or "")
    assert isinstance(outcome, Failed)
    assert outcome.reason.startswith("not executed: sandbox profile 'readonly-repo' needs the host directory 'repo'")
    assert "OUTBOX_SANDBOX_REPO_DIR" not in (tools["k8s.get_pods"].unavailable_reason() or "")


def test_sandbox_check_names_the_refused_mount(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOX_SANDBOX_REPO_DIR", ".")

    result = CliRunner().invoke(app, ["sandbox", "check"])

    assert result.exit_code == 1
    assert "mount 'repo'" in result.output
    assert "contains the outbox's own state" in result.output


def test_sandbox_check_says_why_the_repo_tools_are_unavailable(workdir: Path, require_sandbox: None) -> None:
    result = CliRunner().invoke(app, ["sandbox", "check"])

    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.output.splitlines() if line.startswith("profile readonly-repo")]
    assert "UNAVAILABLE" in row
    assert "OUTBOX_SANDBOX_REPO_DIR" in row


def test_settings_built_by_hand_refuse_state_mounts_too(workdir: Path) -> None:
    with pytest.raises(ValueError, match=r"mount 'repo' \(.*\) contains the outbox's own state"):
        SandboxSettings(mounts={"repo": workdir}, protected_paths=(workdir / ".outbox",))


def test_the_server_does_not_start_with_a_state_mount(workdir: Path) -> None:
    settings = configured(".", policy_dir=str(SHIPPED_TOOLS.parent), policy_watch=False)

    with pytest.raises(SandboxConfigurationError, match=r"mount 'repo' \(.*\) contains the outbox's own state"):
        Runtime.build(settings)


def test_a_symlink_inside_a_mounted_directory_does_not_lead_out_of_the_sandbox(shared_dir: Path) -> None:
    state = shared_dir / "state"
    state.mkdir(mode=0o755)  # readable on the host, to show that the namespace, not the mode, stops it
    state.chmod(0o755)
    (state / "outbox.db").write_text("every action\n")
    (state / "outbox.db").chmod(0o644)
    repo = shared_dir / "repo"
    repo.mkdir(mode=0o755)
    repo.chmod(0o755)
    (repo / "leak").symlink_to(state)
    (repo / "leak-file").symlink_to(state / "outbox.db")
    sandbox = SandboxSettings(mounts={"repo": repo}, protected_paths=(state,))
    code = "import os\nfor p in ['/repo/leak/outbox.db', '/repo/leak-file']: print(p, os.path.exists(p))"

    result = python(code, sandbox, profile="readonly-repo")

    assert result.stdout.splitlines() == ["/repo/leak/outbox.db False", "/repo/leak-file False"]
