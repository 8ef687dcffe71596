"""A command tool knows when it cannot run on this server, before anything is recorded.

`CommandTool.unavailable_reason()` (the `ChecksAvailability` capability) names the missing piece
in words an operator can act on: no usable bubblewrap, a secret, mount, destination, socat or
prlimit missing.
It is asked at every submission, so it runs nothing but file lookups and a remembered probe.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from outbox.commands import CommandTool, CommandToolDefinition, SandboxSettings, load_command_tools
from outbox.commands.sandbox import SandboxUnavailable, command_problem, run_command
from outbox.toolkit.base import ChecksAvailability, ExecutionContext, Failed
from tests.commands.conftest import CLUSTER_DESTINATIONS, KUBECONFIG, SHIPPED_TOOLS

CONTEXT = ExecutionContext(
    action_id="act_1", agent_id="agt_1", agent_name="ops-bot", on_behalf_of=None, idempotency_key="k-1", attempt=1
)


def echo_tool(settings: SandboxSettings, **changes: object) -> CommandTool:
    definition = CommandToolDefinition.model_validate(
        {
            "name": "demo.echo",
            "description": "Print a word.",
            "parameters": {"word": {"type": "string", "pattern": "^[a-z]+$", "description": "A word."}},
            "argv": ["/usr/bin/echo", "{word}"],
            "targets": [{"object": "demo:echo", "act": "run"}],
        }
        | changes
    )
    return CommandTool(definition, settings)


TOKEN_SECRET = [{"name": "api-token", "env": "API_TOKEN"}]


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every uid may use (the bwrap probe runs as the sandbox's host uid under root)."""
    path = Path(tempfile.mkdtemp(prefix="outbox-availability-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


def test_a_command_tool_checks_its_availability(require_sandbox: None) -> None:
    tool = echo_tool(SandboxSettings())

    assert isinstance(tool, ChecksAvailability)
    assert tool.unavailable_reason() is None


def test_without_bubblewrap_the_tool_is_unavailable_and_says_so(tmp_path: Path) -> None:
    tool = echo_tool(SandboxSettings(bwrap_path=tmp_path / "no-bwrap"))

    reason = tool.unavailable_reason()

    assert reason is not None
    assert reason.startswith("bubblewrap (bwrap) is not installed or not executable")
    assert "OUTBOX_ALLOW_UNSANDBOXED" in reason


def test_development_that_allows_unsandboxed_runs_keeps_the_tool_available(tmp_path: Path) -> None:
    tool = echo_tool(SandboxSettings(bwrap_path=tmp_path / "no-bwrap", allow_unsandboxed=True))

    assert tool.unavailable_reason() is None


def test_a_missing_secret_makes_the_tool_unavailable_and_names_the_secret(require_sandbox: None) -> None:
    tool = echo_tool(SandboxSettings(), secrets=TOKEN_SECRET)

    reason = tool.unavailable_reason()

    assert reason is not None
    assert reason.startswith("secret 'api-token' is not configured on this server")
    assert "OUTBOX_SANDBOX_SECRETS" in reason


def test_a_secret_in_the_settings_makes_it_available(require_sandbox: None) -> None:
    tool = echo_tool(SandboxSettings(secrets={"api-token": "t0ken-value"}), secrets=TOKEN_SECRET)

    assert tool.unavailable_reason() is None


def test_a_secret_file_that_appears_later_is_seen_without_a_reload(require_sandbox: None, tmp_path: Path) -> None:
    tool = echo_tool(SandboxSettings(secrets_dir=tmp_path), secrets=TOKEN_SECRET)
    before = tool.unavailable_reason()

    (tmp_path / "api-token").write_text("t0ken-value")

    assert before is not None
    assert f"a file named after it in {tmp_path}" in before
    assert tool.unavailable_reason() is None


def test_an_unnamed_mount_makes_the_repo_tools_unavailable() -> None:
    tools = {tool.name: tool for tool in load_command_tools(SHIPPED_TOOLS).build_tools(SandboxSettings())}

    reason = tools["git.log"].unavailable_reason()

    assert reason is not None
    assert "needs the host directory 'repo', which the operator has not named" in reason


def test_a_mount_that_is_not_a_directory_makes_the_tool_unavailable(tmp_path: Path) -> None:
    settings = SandboxSettings(mounts={"repo": tmp_path / "gone"})

    reason = echo_tool(settings, sandbox="readonly-repo").unavailable_reason()

    assert reason is not None
    assert reason.startswith(f"mount 'repo' ({tmp_path / 'gone'}) is not a directory")


def test_without_prlimit_the_tool_is_unavailable(tmp_path: Path) -> None:
    reason = echo_tool(SandboxSettings(prlimit_path=tmp_path / "prlimit")).unavailable_reason()

    assert reason is not None
    assert reason.startswith(f"prlimit ({tmp_path / 'prlimit'}), which applies the resource limits, is not executable")


def test_every_missing_piece_is_named_at_once(tmp_path: Path) -> None:
    settings = SandboxSettings(bwrap_path=tmp_path / "no-bwrap", prlimit_path=tmp_path / "prlimit")

    reason = echo_tool(settings, sandbox="readonly-repo", secrets=TOKEN_SECRET).unavailable_reason()

    assert reason is not None
    problems = [
        "sandbox profile 'readonly-repo' needs the host directory 'repo'",
        "secret 'api-token' is not configured",
        f"prlimit ({tmp_path / 'prlimit'})",
        "bubblewrap (bwrap) is not installed",
    ]
    positions = [reason.find(problem) for problem in problems]
    assert -1 not in positions, reason
    assert positions == sorted(positions)


def test_an_egress_profile_without_socat_is_unavailable(tmp_path: Path) -> None:
    settings = SandboxSettings(
        secrets={"kubeconfig": KUBECONFIG}, destinations=CLUSTER_DESTINATIONS, socat_path=tmp_path / "socat"
    )
    get_pods = next(
        tool for tool in load_command_tools(SHIPPED_TOOLS).build_tools(settings) if tool.name == "k8s.get_pods"
    )

    reason = get_pods.unavailable_reason()

    assert reason is not None
    assert f"socat ({tmp_path / 'socat'}), which bridges the proxy into the sandbox, is not executable" in reason


def test_a_tool_whose_destinations_are_all_unconfigured_is_unavailable() -> None:
    settings = SandboxSettings(secrets={"kubeconfig": KUBECONFIG})
    get_pods = next(
        tool for tool in load_command_tools(SHIPPED_TOOLS).build_tools(settings) if tool.name == "k8s.get_pods"
    )

    reason = get_pods.unavailable_reason()

    assert reason is not None
    assert "none of the destinations 'production', 'staging' is configured on this server" in reason
    assert "OUTBOX_SANDBOX_DESTINATIONS" in reason


def test_the_shipped_kubernetes_tools_are_available_once_their_secret_and_clusters_are_configured(
    require_sandbox: None,
) -> None:
    without = load_command_tools(SHIPPED_TOOLS).build_tools(SandboxSettings(destinations=CLUSTER_DESTINATIONS))
    configured = load_command_tools(SHIPPED_TOOLS).build_tools(
        SandboxSettings(secrets={"kubeconfig": KUBECONFIG}, destinations=CLUSTER_DESTINATIONS)
    )

    assert {tool.name: tool.unavailable_reason() for tool in configured if tool.name.startswith("k8s.")} == {
        "k8s.delete_namespace": None,
        "k8s.delete_namespaces": None,
        "k8s.get_pods": None,
        "k8s.scale_deployment": None,
    }
    assert all("'kubeconfig'" in (tool.unavailable_reason() or "") for tool in without if tool.name.startswith("k8s."))


def test_an_unknown_profile_is_reported_not_raised() -> None:
    assert command_problem(SandboxSettings(), "nonexistent") == (
        "unknown sandbox profile 'nonexistent' (known: default, network, readonly-repo, terraform)"
    )


def failing_bwrap(directory: Path) -> tuple[Path, Path]:
    """A `bwrap` that counts its calls in a file and refuses, as one without namespaces would."""
    calls = directory / "calls"
    bwrap = directory / "bwrap"
    bwrap.write_text(f"#!/bin/sh\necho x >> {calls}\necho 'No permissions to create new namespace' >&2\nexit 1\n")
    bwrap.chmod(0o755)
    return bwrap, calls


def probe_count(calls: Path) -> int:
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def test_a_failed_sandbox_probe_is_remembered_between_submissions(open_dir: Path) -> None:
    bwrap, calls = failing_bwrap(open_dir)
    tool = echo_tool(SandboxSettings(bwrap_path=bwrap))

    first = tool.unavailable_reason()
    second = tool.unavailable_reason()

    assert first is not None
    assert first.startswith("bubblewrap cannot create namespaces here: No permissions to create new namespace")
    assert second == first
    assert probe_count(calls) == 1


def test_a_run_probes_again_instead_of_trusting_a_remembered_failure(open_dir: Path) -> None:
    bwrap, calls = failing_bwrap(open_dir)
    settings = SandboxSettings(bwrap_path=bwrap)
    tool = echo_tool(settings)
    assert tool.unavailable_reason() is not None

    with pytest.raises(SandboxUnavailable, match="refusing to run commands unsandboxed"):
        run_command(["/usr/bin/true"], settings=settings, profile="default", timeout_seconds=5, output_cap_bytes=1024)
    outcome = tool.execute(CONTEXT, tool.parse_args({"word": "hi"}))

    assert probe_count(calls) == 3
    assert isinstance(outcome, Failed)
    assert outcome.reason.startswith("not executed: bubblewrap cannot create namespaces here")
