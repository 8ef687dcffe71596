"""`outbox policy test` and the server give the same answers: no rule is written twice.

Every shipped policy case (policies/tests/*.yaml) runs two ways and must get the same answers:

- through the runtime path: a real `Runtime` on SQLite and PostgreSQL, the agent created by the
  agents service, the call submitted by `outbox.actions.service.submit`, and every identity's
  right to approve asked of the approvals service (`check_may_decide`, the gate the CLI, the
  admin API and Slack use);
- through `outbox policy test` (`outbox.policytools.cases`).

The answers compared: the call's effect (allow, approve, deny, after the tool's blast-radius
bound), the rules that decided it, and, for a call that needs a human, for each identity the case
names and a panel of spellings and impostors, whether it may approve (and if not, the refusal).
A case that gives targets instead of a tool call reaches the runtime through a tool whose targets
are its arguments (`tests/tools/targets_tool.py`).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlmodel import select

from outbox.actions.models import Action
from outbox.actions.service import parse_envelope, submit
from outbox.agents.models import Agent
from outbox.agents.principals import AGENT_PREFIX
from outbox.agents.service import authenticate, create_agent, normalise_role
from outbox.approvals.authority import ApprovalRefused, RefusalCode
from outbox.approvals.service import check_may_decide, decide
from outbox.execution.service import run_action
from outbox.policy.engine import PolicySnapshot
from outbox.policytools.cases import LocatedCase, approver_refusal, load_cases, resolve_targets, run_case
from outbox.policytools.targets import ToolCatalog, catalog_of
from outbox.runtime import Runtime
from outbox.tools.providers import BUILTIN_PROVIDERS
from tests.support.dispatchers import RecordingDispatcher
from tests.support.sandbox_dirs import sandbox_readable_dir
from tests.tools.targets_tool import NAME as TARGETS_TOOL
from tests.tools.targets_tool import provide_targets_tool

# Identities judged on every call that needs a human, on top of the ones the case names: the
# shipped approvers in other spellings, people without the grant, and impostors.
PANEL = (
    "user:lead@example.com",
    "lead@example.com",
    "LEAD@Example.COM",
    "user:\uff4c\uff45\uff41\uff44@example.com",  # fullwidth letters: NFKC makes them lead@…
    "Lead <lead@example.com>",
    "mailto:lead@example.com",
    "user:lead@example.com\u200b",
    "user:oncall@example.com",
    "slack:U0123ABC",
    "slack:u0123abc",
    "user:someone-else@example.com",
    "role:approver-http",
    "role:approver-infra",
    "{agent}",
    "AGENT:{bare}",
    "  {agent}",
    "",
)


@dataclass(frozen=True)
class Answers:
    effect: str
    rules: tuple[str, ...]
    # (identity, None when it may approve, else why not), for a call that needs a human.
    approvers: tuple[tuple[str, str | None], ...]


@pytest.fixture
def mount_root() -> Iterator[Path]:
    """Directories for the terraform and repo mounts that the sandbox's host uid can read: each
    profile's isolation probe mounts them before its first command (pytest's tmp_path is 0700)."""
    with sandbox_readable_dir("outbox-drift-", "terraform", "repo", readme=False) as root:
        yield root


@pytest.fixture
def case_runtime(make_runtime: Callable[..., Runtime], mount_root: Path) -> Runtime:
    """A runtime on the test's policy directory, with the targets tool loaded beside the real ones.

    It has every secret and directory the shipped command tools need: a tool that cannot run here
    is refused before policy is asked to record anything (503), and these tests compare decisions."""
    return make_runtime(
        RecordingDispatcher(),
        providers=[*BUILTIN_PROVIDERS, provide_targets_tool],
        sandbox_secrets={"kubeconfig": SecretStr("unused"), "terraform-credentials": SecretStr("unused")},
        # The k8s tools reach their cluster's API server, a server-side destination (never contacted here).
        sandbox_destinations={
            name: {"host": f"{name}.cluster.test", "port": 6443} for name in ("staging", "production")
        },
        sandbox_mounts={"terraform": mount_root / "terraform"},
        sandbox_repo_dir=mount_root / "repo",
    )


class Agents:
    """The case's agent, as `agents create` makes it; a later case may give it other roles."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.keys: dict[str, str] = {}

    def key_for(self, name: str, roles: list[str]) -> str:
        wanted = sorted({normalise_role(r) for r in roles})
        with self.runtime.db.session() as session:
            if name not in self.keys:
                _agent, self.keys[name] = create_agent(session, name, roles, actor="test")
            else:
                # `agents create` never reuses a name, so the row is given the case's roles.
                agent = session.exec(select(Agent).where(Agent.name == name)).one()
                agent.roles = wanted
                session.add(agent)
        return self.keys[name]


def agent_name(located: LocatedCase) -> str:
    assert located.case.subject is None, (
        f"{located.title}: a case with a human `subject` has no runtime path (only agents submit calls)"
    )
    return located.case.principal.removeprefix(AGENT_PREFIX)


def panel_for(located: LocatedCase) -> list[str]:
    bare = agent_name(located)
    people = [p.format(agent=located.case.principal, bare=bare) for p in PANEL]
    return list(dict.fromkeys([*located.case.approvers, *located.case.not_approvers, *people]))


def envelope_of(located: LocatedCase) -> dict[str, object]:
    case = located.case
    if case.tool is not None:
        return {"tool": case.tool, "args": case.args or {}}
    if case.targets is not None:
        targets = [{"object": t.object, "act": t.act} for t in case.targets]
    else:
        targets = [{"object": case.object, "act": case.act}]
    return {"tool": TARGETS_TOOL, "args": {"targets": targets}}


def runtime_answers(runtime: Runtime, agents: Agents, located: LocatedCase) -> Answers:
    key = agents.key_for(agent_name(located), located.case.roles)
    with runtime.db.session() as session:
        agent = authenticate(session, key)
    assert agent is not None
    answer = submit(
        runtime,
        agent,
        parse_envelope(envelope_of(located)),
        str(uuid.uuid4()),
        {"method": "POST", "path": "/v1/actions", "body": "(drift test)"},
    )
    assert answer.action_id is not None
    with runtime.db.session() as session:
        action = session.get(Action, answer.action_id)
        assert action is not None
        effect, rules = action.decision_effect, tuple(r["source"] for r in action.decision_rules)
    assert answer.status == (403 if effect == "deny" else 202)
    judged: list[tuple[str, str | None]] = []
    if effect == "approve":
        for identity in panel_for(located):
            try:
                check_may_decide(runtime, answer.action_id, identity, "approve")
            except ApprovalRefused as refusal:
                judged.append((identity, refusal.message))
            else:
                judged.append((identity, None))
    return Answers(effect, rules, tuple(judged))


def policy_test_answers(located: LocatedCase, snapshot: PolicySnapshot, catalog: ToolCatalog) -> Answers:
    result = run_case(located, snapshot, catalog)
    assert result.passed, (located.title, result.messages)
    assert result.got is not None
    # The answers `outbox policy test` gave for the identities the case names…
    named = [(a.identity, a.refusal) for a in result.approvers]
    judged: list[tuple[str, str | None]] = []
    if result.got == "approve":
        targets, _bound = resolve_targets(located.case, catalog)
        # …and the same question asked the way it asks it, for the rest of the panel.
        answered = dict(named)
        judged = [
            (identity, answered[identity] if identity in answered else approver_refusal(snapshot, identity, targets))
            for identity in panel_for(located)
        ]
    assert judged[: len(named)] == named
    return Answers(result.got, tuple(f"{r.file}:{r.line}" for r in result.rules), tuple(judged))


def compare_every_case(runtime: Runtime) -> list[LocatedCase]:
    active = runtime.policy.current
    catalog = catalog_of(active.tools)
    cases, problems = load_cases(active.snapshot.directory)
    assert problems == []
    agents = Agents(runtime)
    drift = []
    for located in cases:
        at_runtime = runtime_answers(runtime, agents, located)
        in_policy_test = policy_test_answers(located, active.snapshot, catalog)
        if at_runtime != in_policy_test:
            drift.append((f"{located.file}:{located.line} {located.title}", at_runtime, in_policy_test))
    assert drift == []
    return cases


def test_every_shipped_case_gets_the_same_answers_at_runtime_and_in_policy_test(case_runtime: Runtime) -> None:
    cases = compare_every_case(case_runtime)
    assert len(cases) >= 40
    # Every form of case, and every effect, went through both paths.
    assert {c.case.expect for c in cases} == {"allow", "approve", "deny"}
    assert any(c.case.tool for c in cases) and any(c.case.object for c in cases) and any(c.case.targets for c in cases)


def test_the_shipped_cases_include_a_mixed_call_and_an_approver_of_only_its_approve_targets(
    case_runtime: Runtime,
) -> None:
    """The drift once found: on a call mixing allow and approve targets, `policy test` asked only
    about the approve targets while the server asked about all of them."""
    snapshot = case_runtime.policy.current.snapshot
    catalog = catalog_of(case_runtime.policy.current.tools)
    cases, _problems = load_cases(snapshot.directory)
    mixed = []
    for located in cases:
        targets, _bound = resolve_targets(located.case, catalog)
        subject = located.case.as_subject()
        effects = {t.target: t.effect for t in snapshot.decide(subject, targets).targets}
        approve_only = [t for t, effect in effects.items() if effect == "approve"]
        if set(effects.values()) != {"allow", "approve"}:
            continue
        # Someone the case refuses although they may approve every target that needs approval.
        partial = [
            person
            for person in located.case.not_approvers
            if approver_refusal(snapshot, person, approve_only) is None
            and approver_refusal(snapshot, person, targets) is not None
        ]
        if partial:
            mixed.append((located, partial))
    assert mixed, "policies/tests has a mixed allow/approve call with an approver of only its approve targets"
    assert [person for _case, partial in mixed for person in partial] == ["user:oncall@example.com", "slack:U0123ABC"]


def test_an_approver_of_only_the_approve_targets_is_refused_by_the_server_and_fails_a_policy_test(
    case_runtime: Runtime,
) -> None:
    located = next(c for c in load_cases(case_runtime.policy.current.snapshot.directory)[0] if c.case.targets)
    agents = Agents(case_runtime)
    key = agents.key_for(agent_name(located), located.case.roles)
    with case_runtime.db.session() as session:
        agent = authenticate(session, key)
    assert agent is not None
    answer = submit(case_runtime, agent, parse_envelope(envelope_of(located)), "mixed-1", {"body": "(test)"})
    assert answer.body["status"] == "awaiting_approval"
    assert answer.action_id is not None

    with pytest.raises(ApprovalRefused) as refused:
        decide(case_runtime, answer.action_id, "user:oncall@example.com", "approve", via="cli")
    assert refused.value.code is RefusalCode.NOT_AUTHORIZED
    assert "k8s:staging/namespace/checkout/deployment/web" in refused.value.message

    # A policy test that claims oncall may approve it fails, for the same reason.
    claim = located.case.model_copy(update={"approvers": ["user:oncall@example.com"], "not_approvers": []})
    snapshot = case_runtime.policy.current.snapshot
    result = run_case(
        LocatedCase(located.file, located.line, claim), snapshot, catalog_of(case_runtime.policy.current.tools)
    )
    assert not result.passed
    assert result.messages == (f"user:oncall@example.com should be allowed to approve, but: {refused.value.message}",)

    # Whoever may approve every target approves it, at runtime as in the case.
    assert decide(case_runtime, answer.action_id, "user:lead@example.com", "approve", via="cli").outcome == "approved"


# --- The blast-radius bound: a call policy allows goes to a human, in both paths --------------

BOUNDED_TOOL = """
tools:
  - name: k8s.get_pods_of
    description: List the pods of several namespaces (tests only).
    parameters:
      cluster: {type: string, enum: [staging, production], description: The cluster.}
      namespaces:
        type: array
        description: The exact namespace names.
        min_items: 1
        max_items: 10
        items: {type: string, pattern: '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$', max_length: 63}
    argv: [kubectl, --context, "{cluster}", get, pods, --namespace, "{namespaces}"]
    targets:
      - {object: "k8s:{cluster}/namespace/{namespaces}", act: read}
    approval_above_targets: 2
    sandbox: network
    timeout_seconds: 30
    secrets:
      - {name: kubeconfig, file: kubeconfig, path_env: KUBECONFIG}
"""

BOUNDED_CASES = """
cases:
  - name: two namespaces are within the bound
    agent: ops-bot
    roles: [k8s-operator]
    tool: k8s.get_pods_of
    args: {cluster: staging, namespaces: [checkout, billing]}
    expect: allow
    rule: "p, role:k8s-operator, k8s:*/namespace/*, read, allow"
  - name: three namespaces are over it, so a human approves although policy allows every one
    agent: ops-bot
    roles: [k8s-operator]
    tool: k8s.get_pods_of
    args: {cluster: staging, namespaces: [checkout, billing, search]}
    expect: approve
    approvers: [user:lead@example.com]
    not_approvers: [user:oncall@example.com, agent:ops-bot]
  - name: a deny still beats the bound
    agent: ops-bot
    roles: [http-reader]
    tool: k8s.get_pods_of
    args: {cluster: staging, namespaces: [checkout, billing, search]}
    expect: deny
"""


@pytest.fixture
def bounded_policy(policy_dir: Path) -> Path:
    (policy_dir / "tools" / "bounded.yaml").write_text(BOUNDED_TOOL, encoding="utf-8")
    shutil.rmtree(policy_dir / "tests")
    (policy_dir / "tests").mkdir()
    (policy_dir / "tests" / "bounded.yaml").write_text(BOUNDED_CASES, encoding="utf-8")
    return policy_dir


def test_a_blast_radius_escalation_is_the_same_at_runtime_and_in_policy_test(
    bounded_policy: Path, case_runtime: Runtime
) -> None:
    cases = compare_every_case(case_runtime)
    assert [c.case.expect for c in cases] == ["allow", "approve", "deny"]
    with case_runtime.db.session() as session:
        escalated = session.exec(select(Action).where(Action.decision_effect == "approve")).one()
    assert escalated.status_reason == (
        "k8s.get_pods_of would touch 3 targets in one action; above 2 a human approves before anything "
        "runs (policy alone would allow it)"
    )


def test_execution_decides_again_with_the_bound_of_the_running_definitions(
    bounded_policy: Path, case_runtime: Runtime
) -> None:
    """A call queued within the bound does not run once a reload lowers the bound below it."""
    agents = Agents(case_runtime)
    key = agents.key_for("ops-bot", ["k8s-operator"])
    with case_runtime.db.session() as session:
        agent = authenticate(session, key)
    assert agent is not None
    call = {"tool": "k8s.get_pods_of", "args": {"cluster": "staging", "namespaces": ["checkout", "billing"]}}
    answer = submit(case_runtime, agent, parse_envelope(call), "bounded-1", {"body": "(test)"})
    assert answer.body["status"] == "queued"
    assert answer.action_id is not None

    tool_file = bounded_policy / "tools" / "bounded.yaml"
    tool_file.write_text(BOUNDED_TOOL.replace("approval_above_targets: 2", "approval_above_targets: 1"))
    assert case_runtime.policy.reload()[0]

    assert run_action(case_runtime, answer.action_id) == "failed"
    with case_runtime.db.session() as session:
        action = session.get(Action, answer.action_id)
    assert action is not None
    assert action.status_reason is not None
    assert action.status_reason.startswith(f"policy {case_runtime.policy.current.version} no longer allows this call")
    assert "would touch 2 targets in one action; above 1 a human approves" in action.status_reason
    assert action.artifact is None  # nothing ran
