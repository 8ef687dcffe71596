"""Optional tool capabilities are protocols (`outbox/toolkit/base.py`), asked with `isinstance`.

The shipped tools have exactly the capabilities they are written to have, each one behaves as
its protocol says, and a tool without one (the method missing, or set to None) is treated as not
having it: no preview, no dry run, no escalation, no destructive acts of its own, no config.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from outbox.actions.models import Action
from outbox.actions.service import parse_envelope, submit
from outbox.agents.service import authenticate
from outbox.commands.sandbox import SandboxResult
from outbox.mail.service import mail_config
from outbox.policy.effective import blast_radius
from outbox.policytools.targets import DESTRUCTIVE_ACTS, catalog_of, load_catalog
from outbox.runtime import Runtime
from outbox.toolkit.base import (
    BlastRadiusBounded,
    Configured,
    DeclaresDestructiveActs,
    DescribesTargets,
    DryRunnable,
    DryRunOutput,
    Previewable,
    Target,
    Tool,
)
from outbox.tools.providers import BUILTIN_PROVIDERS
from tests.support.agents import make_agent
from tests.support.dispatchers import RecordingDispatcher
from tests.tools.targets_tool import NAME as TARGETS_TOOL
from tests.tools.targets_tool import TargetsTool, provide_targets_tool

CAPABILITIES: dict[str, type] = {
    "previewable": Previewable,
    "dry-runnable": DryRunnable,
    "blast-radius bounded": BlastRadiusBounded,
    "describes targets": DescribesTargets,
    "destructive acts": DeclaresDestructiveActs,
    "configured": Configured,
}
COMMAND = {"previewable", "dry-runnable", "blast-radius bounded", "describes targets"}
EXPECTED = {
    "http.request": {"previewable", "describes targets", "configured"},
    "email.send": {"previewable", "describes targets", "destructive acts", "configured"},
    "fs.list_directory": COMMAND,
    "git.log": COMMAND,
    "k8s.get_pods": COMMAND,
    "k8s.scale_deployment": COMMAND,
    "k8s.delete_namespace": COMMAND,
    "k8s.delete_namespaces": COMMAND,
    "terraform.plan": COMMAND,
    "terraform.apply": COMMAND,
}


def capabilities_of(tool: object) -> set[str]:
    return {name for name, protocol in CAPABILITIES.items() if isinstance(tool, protocol)}


def shipped(policy_dir: Path) -> dict[str, Tool]:
    catalog = load_catalog(policy_dir)
    assert catalog.load_error is None
    return dict(catalog.tools)


def test_each_shipped_tool_has_exactly_the_capabilities_it_is_written_with(policy_dir: Path) -> None:
    tools = shipped(policy_dir)
    assert {name: capabilities_of(tool) for name, tool in tools.items()} == EXPECTED
    assert all(isinstance(tool, Tool) for tool in tools.values())


def test_the_shipped_capabilities_answer_as_their_protocols_say(policy_dir: Path) -> None:
    tools = shipped(policy_dir)
    http, mail, delete = tools["http.request"], tools["email.send"], tools["k8s.delete_namespaces"]
    assert isinstance(http, Previewable) and isinstance(http, Configured)
    get = http.parse_args({"method": "GET", "url": "http://127.0.0.1:8765/orders"})
    assert http.preview(get) == {"method": "GET", "url": "http://127.0.0.1:8765/orders", "json": None}
    assert http.config is not None

    assert isinstance(mail, DeclaresDestructiveActs) and isinstance(mail, DescribesTargets)
    assert mail.destructive_acts == frozenset({"send", "bulk"})
    assert Target("mail:agents.mail.example.com/{recipient}", "bulk") in mail.target_patterns()

    assert isinstance(delete, BlastRadiusBounded) and isinstance(delete, DryRunnable)
    few = delete.parse_args({"cluster": "staging", "names": ["a", "b", "c"]})
    many = delete.parse_args({"cluster": "staging", "names": ["a", "b", "c", "d"]})
    assert delete.approval_required_by_blast_radius(few) is None
    assert delete.approval_required_by_blast_radius(many) == (
        "k8s.delete_namespaces would touch 4 targets in one action; above 3 a human approves before anything runs"
    )
    assert blast_radius(delete, many) == delete.approval_required_by_blast_radius(many)

    # A definition without a dry-run argv has no dry run for any call: None, and nothing runs.
    log = tools["git.log"]
    assert isinstance(log, DryRunnable)
    assert log.dry_run(log.parse_args({})) is None


def test_a_sandbox_result_is_a_dry_run_output() -> None:
    result = SandboxResult(
        argv=("kubectl", "version"),
        profile="network",
        exit_code=0,
        stdout_bytes=b"ok\n",
        stderr_bytes=b"",
        stdout_truncated=False,
        stderr_truncated=False,
        timed_out=False,
        duration_seconds=0.1,
        isolation=(),
        unsandboxed=False,
    )
    assert isinstance(result, DryRunOutput)
    assert result.artifact()["argv"] == ["kubectl", "version"]
    assert result.response()["stdout"] == "ok\n"


class NoneCapabilities(TargetsTool):
    """Capability methods present but set to None: `runtime_checkable` treats them as absent."""

    preview = None
    dry_run = None
    approval_required_by_blast_radius = None
    target_patterns = None


class LookAlikes(TargetsTool):
    """Members whose names are close to a capability's but are not it."""

    previews = "not a preview"
    dryrun = "not a dry run"
    destructive = frozenset({"launch"})
    configuration = ("not", "config")

    def approval_required(self, args: BaseModel) -> str:
        return "not the blast-radius bound"


@pytest.mark.parametrize("tool", [TargetsTool(), NoneCapabilities(), LookAlikes()], ids=lambda t: type(t).__name__)
def test_a_tool_without_a_capability_is_treated_as_not_having_it(tool: Tool) -> None:
    assert isinstance(tool, Tool)
    assert capabilities_of(tool) == set()
    args = tool.parse_args({"targets": [{"object": "k8s:staging/namespace/a", "act": "delete"}] * 5})
    assert blast_radius(tool, args) is None
    catalog = catalog_of({tool.name: tool})
    assert catalog.undescribed == (TARGETS_TOOL,)
    assert catalog.destructive == DESTRUCTIVE_ACTS


@pytest.fixture
def plain_runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(RecordingDispatcher(), providers=[*BUILTIN_PROVIDERS, provide_targets_tool])


def submitted(runtime: Runtime, targets: list[dict[str, Any]]) -> Action:
    key = make_agent(runtime.db, f"plain-{uuid.uuid4().hex[:8]}", ["k8s-operator"])
    with runtime.db.session() as session:
        agent = authenticate(session, key)
    assert agent is not None
    envelope = parse_envelope({"tool": TARGETS_TOOL, "args": {"targets": targets}})
    answer = submit(runtime, agent, envelope, str(uuid.uuid4()), {"body": "(test)"})
    assert answer.action_id is not None
    with runtime.db.session() as session:
        action = session.get(Action, answer.action_id)
    assert action is not None
    return action


def test_the_pipeline_records_no_preview_and_no_escalation_for_a_tool_without_them(plain_runtime: Runtime) -> None:
    # Five namespace reads: a command tool with a bound of 3 would send this to a human.
    many = [{"object": f"k8s:staging/namespace/n{i}", "act": "read"} for i in range(5)]
    action = submitted(plain_runtime, many)
    assert action.preview is None
    assert (action.status, action.decision_effect) == ("queued", "allow")

    needs_human = submitted(plain_runtime, [{"object": "k8s:staging/namespace/n1", "act": "delete"}])
    assert needs_human.preview is None
    assert (needs_human.status, needs_human.decision_effect) == ("awaiting_approval", "approve")


def test_mail_config_reads_the_configured_tool_and_nothing_else(plain_runtime: Runtime) -> None:
    tool = plain_runtime.policy.current.tools["email.send"]
    assert isinstance(tool, Configured)
    assert mail_config(plain_runtime) is tool.config
    assert not isinstance(plain_runtime.policy.current.tools[TARGETS_TOOL], Configured)
