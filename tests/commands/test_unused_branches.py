"""The incident: "clean up the unused branches in staging" deleted twelve namespaces.

One of them was a long-lived integration environment whose name merely contained "branch".
With the shipped kubectl tools an agent cannot select by substring or pattern, must name each
namespace, each one is its own policy target, and above the bound a human approves.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from outbox.commands import CommandTool
from outbox.toolkit.base import ExecutionContext, Failed, Succeeded, Target, ToolArgumentsError

ToolLookup = Callable[[str], CommandTool]
CONTEXT = ExecutionContext("act_2", "agt_1", "ops-bot", "ana", "k-2", 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "*branch*"),
        ("name", "branch*"),
        ("name", "--selector=purpose=branch"),
        ("name", "--all"),
        ("name", "-l"),
        ("name", "feature-branch-.*"),
    ],
)
def test_selecting_namespaces_by_pattern_is_impossible(parsing_tool: ToolLookup, field: str, value: str) -> None:
    tool = parsing_tool("k8s.delete_namespace")

    with pytest.raises(ToolArgumentsError) as raised:
        tool.parse_args({"cluster": "staging", field: value})

    assert [problem.field for problem in raised.value.problems] == [field]


def test_a_substring_names_only_the_namespace_of_that_exact_name(shipped_tool: ToolLookup) -> None:
    """ "branch" is a valid name, so it parses, and it means the namespace called "branch", none other."""
    tool = shipped_tool("k8s.delete_namespace")
    args = tool.parse_args({"cluster": "staging", "name": "branch"})

    assert tool.targets(args) == [Target("k8s:staging/namespace/branch", "delete")]
    outcome = tool.execute(CONTEXT, args)

    assert isinstance(outcome, Failed)
    assert outcome.response["stdout"] == ""
    assert 'namespaces "branch" not found' in outcome.response["stderr"]
    assert "integration-branch-env" not in outcome.response["stderr"]


def test_each_namespace_is_named_and_checked_on_its_own(shipped_tool: ToolLookup) -> None:
    tool = shipped_tool("k8s.delete_namespaces")
    names = ["feature-branch-login", "feature-branch-search", "old-branch-cleanup"]
    args = tool.parse_args({"cluster": "staging", "names": names})

    assert tool.targets(args) == [Target(f"k8s:staging/namespace/{name}", "delete") for name in names]
    assert tool.approval_required_by_blast_radius(args) is None
    outcome = tool.execute(CONTEXT, args)

    assert isinstance(outcome, Succeeded)
    assert outcome.response["stdout"].splitlines() == [f'namespace "{name}" deleted' for name in names]


def test_more_targets_than_the_bound_go_to_a_human_with_a_dry_run(shipped_tool: ToolLookup) -> None:
    tool = shipped_tool("k8s.delete_namespaces")
    names = ["feature-branch-login", "feature-branch-search", "old-branch-cleanup", "integration-branch-env"]
    args = tool.parse_args({"cluster": "staging", "names": names})

    reason = tool.approval_required_by_blast_radius(args)
    preview = tool.dry_run(args)

    assert reason == (
        "k8s.delete_namespaces would touch 4 targets in one action; above 3 a human approves before anything runs"
    )
    assert preview is not None
    assert preview.stdout.splitlines() == [f'namespace "{name}" deleted (server dry run)' for name in names]


def test_twelve_namespaces_cannot_be_deleted_in_one_action(parsing_tool: ToolLookup) -> None:
    tool = parsing_tool("k8s.delete_namespaces")

    with pytest.raises(ToolArgumentsError) as raised:
        tool.parse_args({"cluster": "staging", "names": [f"feature-branch-{index}" for index in range(12)]})

    assert raised.value.problems[0].field == "names"
