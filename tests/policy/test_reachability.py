"""Which tools an agent may call at all: allow or approve reachable for some target the tool can
produce, with deny overriding, roles resolved as the engine resolves them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from outbox.commands import CommandTool, CommandToolDefinition, SandboxSettings
from outbox.policy.engine import STANDARD_MODEL, PolicySnapshot, build_snapshot
from outbox.policy.matching import Subject
from outbox.policy.reachability import callable_tools, tool_reachability
from outbox.runtime import Runtime
from outbox.toolkit.base import ExecutionContext, Failed, Target, Tool, ToolOutcome

CUSTOM_MODEL = STANDARD_MODEL.replace("objectMatch(r.obj, p.obj)", "r.obj == p.obj")


def policy(rules: str, model: str = STANDARD_MODEL) -> PolicySnapshot:
    files = {"model.conf": model.encode(), "rules.csv": rules.encode()}
    return build_snapshot(Path("/policies"), files, git_commit=None)


def command_tool(tool: str, target: str, act: str, /, **parameters: dict[str, Any]) -> CommandTool:
    """A real command tool whose only target is `target` (with `{param}` placeholders)."""
    parameters = parameters or {"name": {"type": "string", "pattern": "^[a-z]+$", "description": "A name."}}
    definition = CommandToolDefinition.model_validate(
        {
            "name": tool,
            "description": f"{act} {target}",
            "parameters": parameters,
            "argv": ["/usr/bin/true", *(f"{{{p}}}" for p in parameters)],
            "targets": [{"object": target, "act": act}],
        }
    )
    return CommandTool(definition, SandboxSettings())


CLUSTER = {"type": "string", "enum": ["staging", "production"], "description": "The cluster."}
NAME = {"type": "string", "pattern": "^[a-z]+$", "description": "A namespace."}
PATH = {"type": "string", "pattern": "^[a-z/]+$", "description": "A path."}

TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in [
        command_tool("demo.read", "demo:{cluster}/ns/{name}", "read", cluster=CLUSTER, name=NAME),
        command_tool("demo.delete", "demo:{cluster}/ns/{name}", "delete", cluster=CLUSTER, name=NAME),
        command_tool("files.read", "files:/data/{path}", "read", path=PATH),
        command_tool("infra.apply", "infra:{name}", "apply"),
    ]
}


def agent(name: str, *roles: str) -> Subject:
    return Subject(f"agent:{name}", tuple(roles))


# --- The shipped policy -----------------------------------------------------------------------


def test_an_http_reader_sees_only_the_http_tool(runtime: Runtime) -> None:
    active = runtime.policy.current

    reader = tool_reachability(active.snapshot, agent("reader-bot", "role:http-reader"), active.tools)

    assert [name for name, reach in reader.items() if reach.callable] == ["http.request"]
    apply = reader["terraform.apply"]
    assert not apply.callable
    assert apply.reason == (
        "no rule allows it, or asks a human to approve it, for you (agent:reader-bot) or your roles (role:http-reader)"
    )
    assert list(reader) == sorted(active.tools)


def test_the_shipped_roles_each_see_their_own_tools(runtime: Runtime) -> None:
    active = runtime.policy.current

    def visible(*roles: str) -> list[str]:
        return callable_tools(active.snapshot, agent("bot", *roles), active.tools)

    assert visible("role:terraform-operator") == ["terraform.apply", "terraform.plan"]
    assert visible("role:k8s-operator") == [
        "k8s.delete_namespace",
        "k8s.delete_namespaces",
        "k8s.get_pods",
        "k8s.scale_deployment",
    ]
    assert visible("role:mailer") == ["email.send"]
    assert visible("role:repo-reader") == ["fs.list_directory", "git.log"]
    assert visible("role:mailer", "role:http-writer") == ["email.send", "http.request"]
    assert visible() == []


# --- Effects ----------------------------------------------------------------------------------


def test_a_role_that_may_only_ask_for_approval_sees_the_tool() -> None:
    snapshot = policy("p, role:infra, infra:*, apply, approve\n")

    assert callable_tools(snapshot, agent("bot", "role:infra"), TOOLS) == ["infra.apply"]


def test_a_deny_covering_every_target_hides_the_tool_and_names_the_rule() -> None:
    snapshot = policy("p, role:ops, demo:*/ns/*, read|delete, allow\np, role:ops, demo:*/ns/*, delete, deny\n")

    reach = tool_reachability(snapshot, agent("bot", "role:ops"), TOOLS)

    assert reach["demo.read"].callable
    assert not reach["demo.delete"].callable
    assert reach["demo.delete"].reason == (
        "every target this tool can produce is denied for you, by rule `p, role:ops, demo:*/ns/*, delete, deny`"
        " (rules.csv:2)"
    )


def test_a_deny_over_part_of_the_targets_leaves_the_tool_callable() -> None:
    snapshot = policy(
        "p, role:ops, demo:*/ns/*, delete, approve\n"
        "p, role:ops, demo:production/ns/*, delete, deny\n"
        "p, role:ops, demo:staging/ns/kube, delete, deny\n"
    )

    assert callable_tools(snapshot, agent("bot", "role:ops"), TOOLS) == ["demo.delete"]


def test_denies_that_each_cover_one_value_of_an_enum_parameter_hide_the_tool() -> None:
    """The cluster is an enum: each of its values is a target shape of its own, each denied."""
    snapshot = policy(
        "p, role:ops, demo:*/ns/*, delete, allow\n"
        "p, role:ops, demo:staging/ns/*, delete, deny\n"
        "p, role:ops, demo:production/**, *, deny\n"
    )

    reach = tool_reachability(snapshot, agent("bot", "role:ops"), TOOLS)

    assert not reach["demo.delete"].callable
    assert reach["demo.delete"].reason == (
        "every target this tool can produce is denied for you, by rules"
        " `p, role:ops, demo:production/**, *, deny` (rules.csv:3),"
        " `p, role:ops, demo:staging/ns/*, delete, deny` (rules.csv:2)"
    )


def test_a_deny_covering_the_tools_targets_but_not_the_whole_allowing_rule_still_hides_it() -> None:
    snapshot = policy("p, role:ops, files:/**, read, allow\np, role:ops, files:/data/**, read, deny\n")

    assert callable_tools(snapshot, agent("bot", "role:ops"), TOOLS) == []


def test_a_deny_for_another_role_does_not_hide_the_tool() -> None:
    snapshot = policy("p, role:ops, demo:*/ns/*, delete, allow\np, role:interns, demo:*/ns/*, delete, deny\n")

    assert callable_tools(snapshot, agent("bot", "role:ops"), TOOLS) == ["demo.delete"]
    assert callable_tools(snapshot, agent("intern", "role:ops", "role:interns"), TOOLS) == []


# --- Subjects ---------------------------------------------------------------------------------


def test_roles_inherited_through_g_rules_count_at_every_level() -> None:
    snapshot = policy(
        "g, role:lead, role:operator\n"
        "g, role:operator, role:reader\n"
        "p, role:reader, demo:*/ns/*, read, allow\n"
        "p, role:operator, infra:*, apply, approve\n"
    )

    assert callable_tools(snapshot, agent("bot", "role:lead"), TOOLS) == ["demo.read", "infra.apply"]
    assert callable_tools(snapshot, agent("bot", "role:operator"), TOOLS) == ["demo.read", "infra.apply"]
    assert callable_tools(snapshot, agent("bot", "role:reader"), TOOLS) == ["demo.read"]


def test_an_inherited_deny_overrides_an_own_allow() -> None:
    snapshot = policy(
        "g, role:contractor, role:restricted\n"
        "p, role:contractor, infra:*, apply, allow\n"
        "p, role:restricted, infra:*, *, deny\n"
    )

    assert callable_tools(snapshot, agent("bot", "role:contractor"), TOOLS) == []


def test_rules_for_the_agent_principal_count_for_that_agent_only() -> None:
    snapshot = policy("p, agent:deployer, infra:*, apply, allow\n")

    assert callable_tools(snapshot, agent("deployer"), TOOLS) == ["infra.apply"]
    assert callable_tools(snapshot, agent("other"), TOOLS) == []
    reason = tool_reachability(snapshot, agent("other"), TOOLS)["infra.apply"].reason
    assert reason == "no rule allows it, or asks a human to approve it, for you (agent:other), who hold no roles"


def test_a_g_rule_can_give_an_agent_principal_a_role() -> None:
    snapshot = policy("g, agent:deployer, role:infra\np, role:infra, infra:*, apply, approve\n")

    assert callable_tools(snapshot, agent("deployer"), TOOLS) == ["infra.apply"]


# --- Patterns and acts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "visible"),
    [
        ("p, role:x, demo:*/**, *, allow", ["demo.delete", "demo.read"]),
        ("p, role:x, demo:staging/**, read, allow", ["demo.read"]),
        ("p, role:x, demo:*/ns/web, get|read, allow", ["demo.read"]),
        ("p, role:x, demo:*/ns/*/pods, read, allow", []),
        ("p, role:x, demo:qa/ns/*, read, allow", []),
        ("p, role:x, demo:*/ns/*, get|head, allow", []),
        ("p, role:x, files:/data/reports/**, read, allow", ["files.read"]),
        ("p, role:x, files:/data/*, read, allow", ["files.read"]),
        ("p, role:x, files:/etc/**, read, allow", []),
        ("p, role:x, infra:*, apply|plan, approve", ["infra.apply"]),
        ("p, role:x, infra:*, *, allow", ["infra.apply"]),
    ],
)
def test_wildcards_in_objects_and_acts(rule: str, visible: list[str]) -> None:
    assert callable_tools(policy(rule + "\n"), agent("bot", "role:x"), TOOLS) == visible


# --- What cannot be analysed is shown ---------------------------------------------------------


class OpaqueTool:
    """A tool that does not declare the shapes of its targets (no `target_patterns`)."""

    name = "opaque.run"
    description = "Targets known only per call."

    def args_schema(self) -> dict[str, Any]:
        return {"type": "object", "properties": {}, "additionalProperties": False}

    def parse_args(self, raw: dict[str, Any]) -> BaseModel:
        return BaseModel()

    def targets(self, args: BaseModel) -> list[Target]:
        return [Target("opaque:thing", "run")]

    def execute(self, ctx: ExecutionContext, args: BaseModel) -> ToolOutcome:
        return Failed("not in this test", retryable=False)


def test_a_tool_without_target_patterns_is_shown_unanalysed() -> None:
    tools: dict[str, Tool] = {**TOOLS, "opaque.run": OpaqueTool()}

    reach = tool_reachability(policy("p, role:x, infra:*, apply, allow\n"), agent("bot", "role:x"), tools)

    assert [name for name, r in reach.items() if r.callable] == ["infra.apply", "opaque.run"]
    assert reach["opaque.run"].analysed is False
    assert reach["infra.apply"].analysed is True


def test_under_a_custom_model_every_tool_is_shown() -> None:
    snapshot = policy("p, role:x, infra:*, apply, allow\n", model=CUSTOM_MODEL)

    reach = tool_reachability(snapshot, agent("bot"), TOOLS)

    assert all(r.callable and not r.analysed for r in reach.values())


# --- Versions ---------------------------------------------------------------------------------


def test_a_new_policy_version_gets_its_own_answer() -> None:
    before = policy("p, role:x, demo:*/ns/*, read, allow\n")
    after = policy("p, role:x, demo:*/ns/*, read, allow\np, role:x, demo:*/ns/*, read, deny\n")
    bot = agent("bot", "role:x")

    assert callable_tools(before, bot, TOOLS) == ["demo.read"]
    assert callable_tools(after, bot, TOOLS) == []
    assert callable_tools(before, bot, TOOLS) == ["demo.read"]


def test_the_answer_follows_the_tools_passed_in() -> None:
    snapshot = policy("p, role:x, infra:*, apply, allow\np, role:x, demo:*/ns/*, read, allow\n")
    bot = agent("bot", "role:x")

    assert callable_tools(snapshot, bot, TOOLS) == ["demo.read", "infra.apply"]
    assert callable_tools(snapshot, bot, {"infra.apply": TOOLS["infra.apply"]}) == ["infra.apply"]
