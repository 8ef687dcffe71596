"""Agent arguments: each value is one literal argv element, and hostile values are refused at parse time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

from outbox.commands import CommandTool
from outbox.toolkit.base import FieldProblem, Target, ToolArgumentsError

ToolLookup = Callable[[str], CommandTool]


def problems_of(tool: CommandTool, raw: dict[str, Any]) -> list[FieldProblem]:
    with pytest.raises(ToolArgumentsError) as raised:
        tool.parse_args(raw)
    assert raised.value.hint is not None
    return raised.value.problems


INJECTIONS = [
    pytest.param("; rm -rf /", "shell syntax", id="command-separator"),
    pytest.param("$(id)", "shell syntax", id="command-substitution"),
    pytest.param("`id`", "shell syntax", id="backticks"),
    pytest.param("--all-namespaces", "read as an option", id="option-injection"),
    pytest.param("-A", "read as an option", id="short-option"),
    pytest.param("../kube-system", "'..' (a parent directory)", id="parent-directory"),
    pytest.param("staging\nkube-system", "control character", id="newline"),
    pytest.param("default\x00kube-system", "control character", id="nul"),
    pytest.param("branch*", "wildcards and patterns are not accepted", id="glob-star"),
    pytest.param("*branch*", "wildcards and patterns are not accepted", id="substring-glob"),
    pytest.param("stag?ng", "wildcards and patterns are not accepted", id="glob-question-mark"),
    pytest.param("[a-z]*", "wildcards and patterns are not accepted", id="glob-class"),
    pytest.param("two words", "does not match the required pattern", id="space"),
    pytest.param("Payments", "does not match the required pattern", id="uppercase"),
    pytest.param("", "must not be empty", id="empty"),
    pytest.param("a" * 64, "at most 63", id="too-long"),
]


@pytest.mark.parametrize(("value", "message"), INJECTIONS)
def test_hostile_namespace_names_are_refused_naming_the_field(
    parsing_tool: ToolLookup, value: str, message: str
) -> None:
    (problem,) = problems_of(parsing_tool("k8s.delete_namespace"), {"cluster": "staging", "name": value})

    assert problem.field == "name"
    assert message in problem.message


@pytest.mark.parametrize("value", ["../etc", "/etc", "a/../../etc", ".git", "outbox/.git", "outbox/*", "-la", "docs\n"])
def test_directory_listing_stays_inside_the_repository(parsing_tool: ToolLookup, value: str) -> None:
    (problem,) = problems_of(parsing_tool("fs.list_directory"), {"path": value})

    assert problem.field == "path"


def test_enum_values_are_listed_when_refused(parsing_tool: ToolLookup) -> None:
    (problem,) = problems_of(parsing_tool("k8s.delete_namespace"), {"cluster": "prod", "name": "web"})

    assert problem == FieldProblem("cluster", "must be one of: staging, production")


def test_unknown_and_missing_parameters_are_each_reported(parsing_tool: ToolLookup) -> None:
    problems = problems_of(parsing_tool("k8s.delete_namespace"), {"name": "web", "selector": "app=web"})

    assert problems == [
        FieldProblem("selector", "unknown parameter; this tool accepts: cluster, name"),
        FieldProblem("cluster", "required: The cluster (kubeconfig context)."),
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (21, "must be between 0 and 20"),
        (-1, "must be between 0 and 20"),
        (True, "must be an integer, not a boolean"),
        ("3", "must be an integer, not a string"),
        (2.0, "must be an integer, not a number"),
    ],
)
def test_integers_are_bounded_and_strictly_typed(parsing_tool: ToolLookup, value: object, message: str) -> None:
    raw = {"cluster": "staging", "namespace": "shop", "deployment": "web", "replicas": value}

    assert problems_of(parsing_tool("k8s.scale_deployment"), raw) == [FieldProblem("replicas", message)]


def test_array_items_are_checked_one_by_one(parsing_tool: ToolLookup) -> None:
    raw = {"cluster": "staging", "names": ["feature-a", "feature-a", "--all", "b*"]}

    problems = problems_of(parsing_tool("k8s.delete_namespaces"), raw)

    assert [problem.field for problem in problems] == ["names[1]", "names[2]", "names[3]"]
    assert "repeats an earlier item" in problems[0].message


def test_an_array_longer_than_its_bound_is_refused(parsing_tool: ToolLookup) -> None:
    raw = {"cluster": "staging", "names": [f"ns-{index}" for index in range(11)]}

    (problem,) = problems_of(parsing_tool("k8s.delete_namespaces"), raw)

    assert problem.field == "names"
    assert "has 11 items; between 1 and 10 are accepted" in problem.message


def test_a_non_object_is_refused(parsing_tool: ToolLookup) -> None:
    tool = parsing_tool("git.log")
    with pytest.raises(ToolArgumentsError) as raised:
        tool.parse_args(["HEAD"])  # type: ignore[arg-type]

    assert raised.value.problems == [FieldProblem("", "arguments must be a JSON object")]


def test_parsed_arguments_are_a_frozen_model_with_defaults(parsing_tool: ToolLookup) -> None:
    args = parsing_tool("git.log").parse_args({})

    assert type(args).__name__ == "GitLogArguments"
    assert args.model_dump() == {"ref": "HEAD", "max_count": 10}
    with pytest.raises(ValueError, match="frozen"):
        args.max_count = 50  # type: ignore[attr-defined]


def test_each_value_becomes_exactly_one_argv_element(parsing_tool: ToolLookup) -> None:
    tool = parsing_tool("k8s.scale_deployment")
    args = tool.parse_args({"cluster": "staging", "namespace": "shop", "deployment": "web", "replicas": 3})

    assert tool.argv(args) == [
        "kubectl",
        "--context",
        "staging",
        "--namespace",
        "shop",
        "--request-timeout=30s",
        "scale",
        "deployment",
        "web",
        "--replicas=3",
    ]
    assert tool.dry_run_argv(args) == [*tool.argv(args), "--dry-run=server"]


def test_an_array_becomes_one_element_and_one_target_per_item(parsing_tool: ToolLookup) -> None:
    tool = parsing_tool("k8s.delete_namespaces")
    args = tool.parse_args({"cluster": "staging", "names": ["feature-a", "feature-b"]})

    assert tool.argv(args)[5:8] == ["namespace", "feature-a", "feature-b"]
    assert tool.targets(args) == [
        Target("k8s:staging/namespace/feature-a", "delete"),
        Target("k8s:staging/namespace/feature-b", "delete"),
    ]


def test_preview_shows_the_exact_argv_targets_and_sandbox(parsing_tool: ToolLookup) -> None:
    tool = parsing_tool("k8s.delete_namespace")
    args = tool.parse_args({"cluster": "staging", "name": "feature-a"})

    assert tool.preview(args) == {
        "tool": "k8s.delete_namespace",
        "argv": [
            "kubectl",
            "--context",
            "staging",
            "--request-timeout=60s",
            "delete",
            "namespace",
            "feature-a",
            "--wait=false",
        ],
        "dry_run_argv": ["kubectl", "--context", "staging", "delete", "namespace", "feature-a", "--dry-run=server"],
        "targets": [{"object": "k8s:staging/namespace/feature-a", "act": "delete"}],
        "sandbox": "network",
        "timeout_seconds": 120,
        "egress": ["staging.cluster.test:6443 (destination staging)"],
    }


def test_a_hand_built_model_gets_no_shortcut_to_the_argv(parsing_tool: ToolLookup) -> None:
    tool = parsing_tool("k8s.delete_namespace")
    model = type(tool.parse_args({"cluster": "staging", "name": "web"}))
    forged: BaseModel = model.model_construct(cluster="staging", name="--all")

    with pytest.raises(ToolArgumentsError) as raised:
        tool.argv(forged)

    assert raised.value.problems[0].field == "name"
    with pytest.raises(ToolArgumentsError):
        tool.targets(forged)
