"""`CommandTool` end to end: the real sandbox runs a fake kubectl and plain programs, results recorded as seen."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from outbox.commands import CommandTool, CommandToolDefinition, SandboxSettings
from outbox.toolkit.base import ExecutionContext, Failed, Succeeded, Tool
from tests.commands.conftest import KUBECONFIG

ToolLookup = Callable[[str], CommandTool]
CONTEXT = ExecutionContext(
    action_id="act_1", agent_id="agt_1", agent_name="ops-bot", on_behalf_of="ana", idempotency_key="k-1", attempt=1
)


def recorded_argv(stderr: str) -> list[str]:
    """The argv the fake kubectl received (it prints it on stderr)."""
    (line,) = [line for line in stderr.splitlines() if line.startswith("ARGV ")]
    return list(json.loads(line.removeprefix("ARGV ")))


def exit_tool(settings: SandboxSettings, *, sleep_seconds: int = 0, **changes: object) -> CommandTool:
    """A tool that echoes its arguments, sleeps, and exits with the code it is given."""
    definition = CommandToolDefinition.model_validate(
        {
            "name": "demo.exit",
            "description": "Exit with a code.",
            "parameters": {
                "code": {"type": "integer", "minimum": 0, "maximum": 255, "description": "Exit code."},
                "words": {
                    "type": "string",
                    "pattern": "^[a-z $();`|&-]+$",
                    "default": "nothing",
                    "description": "Words to echo; shell characters allowed to show they stay literal.",
                },
            },
            "argv": [
                "/usr/bin/python3",
                "-c",
                "import json, sys, time; print(json.dumps(sys.argv[1:]));"
                " time.sleep(float(sys.argv[3])); sys.exit(int(sys.argv[1]))",
                "{code}",
                "{words}",
                str(sleep_seconds),
            ],
            "targets": [{"object": "demo:exit", "act": "run"}],
            "retryable_exit_codes": [75],
        }
        | changes
    )
    return CommandTool(definition, settings)


def test_a_command_tool_is_a_tool(parsing_tool: ToolLookup) -> None:
    tool: Tool = parsing_tool("k8s.get_pods")  # mypy checks the protocol here

    assert isinstance(tool, Tool)
    assert (tool.name, tool.description) == ("k8s.get_pods", parsing_tool("k8s.get_pods").definition.description)


def test_execute_runs_the_exact_argv_and_records_what_happened(shipped_tool: ToolLookup) -> None:
    tool = shipped_tool("k8s.delete_namespace")
    args = tool.parse_args({"cluster": "staging", "name": "feature-branch-login"})

    outcome = tool.execute(CONTEXT, args)

    assert isinstance(outcome, Succeeded)
    assert outcome.artifact["argv"] == tool.argv(args)
    assert outcome.artifact["profile"] == "network"
    assert outcome.artifact["unsandboxed"] is False
    assert "pid-namespace" in outcome.artifact["isolation"]
    assert recorded_argv(outcome.response["stderr"]) == tool.argv(args)[1:]
    assert outcome.response["stdout"] == 'namespace "feature-branch-login" deleted\n'
    assert outcome.response["exit_code"] == 0
    assert outcome.response["timed_out"] is False


def test_the_kubeconfig_reaches_kubectl_but_never_the_record(shipped_tool: ToolLookup) -> None:
    tool = shipped_tool("k8s.get_pods")

    outcome = tool.execute(CONTEXT, tool.parse_args({"cluster": "staging", "namespace": "payments"}))

    assert isinstance(outcome, Succeeded)
    digest = hashlib.sha256(KUBECONFIG.encode()).hexdigest()
    assert f"KUBECONFIG-SHA256 {digest}" in outcome.response["stderr"]
    recorded = json.dumps([outcome.artifact, outcome.response, outcome.summary])
    assert "kubeconfig-secret-7d1f0c2e9b" not in recorded
    assert "/run/secrets/kubeconfig" not in json.dumps(outcome.artifact)


def test_the_dry_run_runs_in_the_same_sandbox_and_changes_nothing(shipped_tool: ToolLookup) -> None:
    tool = shipped_tool("k8s.scale_deployment")
    args = tool.parse_args({"cluster": "staging", "namespace": "payments", "deployment": "web", "replicas": 0})

    preview = tool.dry_run(args)

    assert preview is not None
    assert preview.argv == tuple(tool.dry_run_argv(args) or ())
    assert preview.argv[-1] == "--dry-run=server"
    assert preview.profile == "network"
    assert preview.stdout == "deployment.apps/web scaled to 0 (server dry run)\n"


def test_a_tool_without_a_dry_run_has_no_preview_run(shipped_tool: ToolLookup) -> None:
    tool = shipped_tool("k8s.get_pods")

    assert tool.dry_run(tool.parse_args({"cluster": "staging", "namespace": "payments"})) is None


def test_a_failing_command_fails_with_its_stderr(shipped_tool: ToolLookup) -> None:
    tool = shipped_tool("k8s.delete_namespace")

    outcome = tool.execute(CONTEXT, tool.parse_args({"cluster": "production", "name": "feature-branch-login"}))

    assert isinstance(outcome, Failed)
    assert not outcome.retryable
    assert outcome.reason == ('exit code 1: Error from server (NotFound): namespaces "feature-branch-login" not found')
    assert outcome.response["exit_code"] == 1


@pytest.mark.parametrize(("code", "retryable"), [(75, True), (1, False)])
def test_only_declared_exit_codes_are_retried(settings: SandboxSettings, code: int, retryable: bool) -> None:
    tool = exit_tool(settings)

    outcome = tool.execute(CONTEXT, tool.parse_args({"code": code}))

    assert isinstance(outcome, Failed)
    assert outcome.retryable is retryable
    assert outcome.reason == f"exit code {code}"


def test_shell_syntax_allowed_by_a_pattern_is_still_one_literal_argument(settings: SandboxSettings) -> None:
    tool = exit_tool(settings)

    outcome = tool.execute(CONTEXT, tool.parse_args({"code": 0, "words": "$(id); `id` | rm -rf && x"}))

    assert isinstance(outcome, Succeeded)
    assert json.loads(outcome.response["stdout"]) == ["0", "$(id); `id` | rm -rf && x", "0"]
    assert outcome.summary.startswith("exit code 0 in ")


def test_a_timeout_fails_without_retry(settings: SandboxSettings) -> None:
    tool = exit_tool(settings, sleep_seconds=30, timeout_seconds=1, retryable_exit_codes=[137])

    outcome = tool.execute(CONTEXT, tool.parse_args({"code": 0}))

    assert isinstance(outcome, Failed)
    assert not outcome.retryable
    assert outcome.response["timed_out"] is True
    assert outcome.reason.startswith("timed out after 1 s")


def test_an_unavailable_sandbox_fails_the_action_without_running_it() -> None:
    tool = exit_tool(SandboxSettings(bwrap_path=Path("/nonexistent/bwrap")))

    outcome = tool.execute(CONTEXT, tool.parse_args({"code": 0}))

    assert isinstance(outcome, Failed)
    assert not outcome.retryable
    assert outcome.reason.startswith("not executed: bubblewrap (bwrap) is not installed")
    assert outcome.artifact["executed"] is False


def test_arguments_the_current_definition_refuses_are_not_executed(settings: SandboxSettings) -> None:
    tool = exit_tool(settings)
    stored = type(tool.parse_args({"code": 0})).model_construct(code=300, words="nothing")

    outcome = tool.execute(CONTEXT, stored)

    assert isinstance(outcome, Failed)
    assert not outcome.retryable
    assert "code: must be between 0 and 255" in outcome.reason
    assert outcome.artifact == {"executed": False}
