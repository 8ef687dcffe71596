"""Policy test cases (`policies/tests/*.yaml`), run by `outbox policy test` and in CI.

A file holds `cases:`, a list of mappings:

    - name: writers need approval to DELETE        # optional; defaults to file:line
      agent: crm-bot                               # or `subject: user:alice`
      roles: [http-writer]                         # roles given at `agents create` (role: optional)
      tool: http.request                           # a tool and its args, exactly as agents send them
      args: {method: DELETE, url: "http://127.0.0.1:8765/orders/1"}
      # …or `object: http:127.0.0.1:8765/orders/1` with `act: delete`, or `targets: [{object, act}]`
      expect: approve                              # allow | approve | deny
      rule: "rules.csv:11"                         # optional: `file:line` or the rule's text
      approvers: [user:alice]                      # optional: must be allowed act `approve`
      not_approvers: [agent:crm-bot]               # optional: must not be

Cases are evaluated with the real tools of the directory (argument validation and targets), the
server's own effective decision (`policy/effective.py`: policy, then the tool's blast-radius
bound), and, for approvals, the runtime's own answer to "may this person approve it"
(`approvals/authority.py`: act `approve` on every target of the call). A case file therefore
cannot pass a call the server treats otherwise (`tests/policy/test_decision_drift.py` runs every
shipped case both ways).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from xml.etree import ElementTree as ET

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from outbox.agents.principals import AGENT_PREFIX, principal
from outbox.approvals.authority import authority_refusal
from outbox.policy.effective import blast_radius, effective_decision
from outbox.policy.engine import Effect, PolicyRule, PolicySnapshot, subject_name
from outbox.policy.matching import Subject
from outbox.policytools.targets import ToolCatalog
from outbox.toolkit.base import Target
from outbox.toolkit.registry import parse_in
from outbox.yamlfiles import YAMLFileError, parse_yaml

TESTS_DIR = "tests"
DEFAULT_AGENT = principal("policy-test")


class CaseTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: str = Field(min_length=1)
    act: str = Field(min_length=1)


class PolicyCase(BaseModel):
    """One expectation about a decision."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    agent: str | None = None
    subject: str | None = None
    roles: list[str] = Field(default_factory=list)
    tool: str | None = None
    args: dict[str, Any] | None = None
    object: str | None = None
    act: str | None = None
    targets: list[CaseTarget] | None = None
    expect: Literal["allow", "approve", "deny"]
    rule: str | None = None
    approvers: list[str] = Field(default_factory=list)
    not_approvers: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_way_to_say_each_thing(self) -> PolicyCase:
        if self.agent is not None and self.subject is not None:
            raise ValueError("give `agent` or `subject`, not both")
        ways = [self.tool is not None, self.object is not None or self.act is not None, self.targets is not None]
        if sum(ways) != 1:
            raise ValueError("give exactly one of: `tool` (with `args`), `object` and `act`, or `targets`")
        if self.tool is None and self.args is not None:
            raise ValueError("`args` goes with `tool`")
        if (self.object is None) != (self.act is None):
            raise ValueError("`object` and `act` go together")
        return self

    @property
    def principal(self) -> str:
        if self.subject is not None:
            # A human subject means the canonical person, as in the rules and at runtime.
            return subject_name(self.subject)
        if self.agent is not None:
            return self.agent if self.agent.startswith(AGENT_PREFIX) else principal(self.agent)
        return DEFAULT_AGENT

    @property
    def role_names(self) -> tuple[str, ...]:
        return tuple(r if r.startswith("role:") else f"role:{r}" for r in self.roles)

    def as_subject(self) -> Subject:
        return Subject(self.principal, self.role_names)


@dataclass(frozen=True, slots=True)
class LocatedCase:
    file: str
    line: int
    case: PolicyCase

    @property
    def title(self) -> str:
        return self.case.name or f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class CaseProblem:
    """A case file or entry that cannot be read; reported like a failing case."""

    file: str
    line: int | None
    message: str


def load_cases(policy_dir: Path) -> tuple[list[LocatedCase], list[CaseProblem]]:
    """Every case in `<policy_dir>/tests/*.yaml`, with the file and line it starts on."""
    cases: list[LocatedCase] = []
    problems: list[CaseProblem] = []
    directory = policy_dir / TESTS_DIR
    if not directory.is_dir():
        return cases, problems
    for path in sorted(p for p in directory.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file()):
        relative = path.relative_to(policy_dir).as_posix()
        found, trouble = parse_case_text(path.read_text(encoding="utf-8"), relative)
        cases.extend(found)
        problems.extend(trouble)
    return cases, problems


def parse_case_text(text: str, relative: str) -> tuple[list[LocatedCase], list[CaseProblem]]:
    try:
        data = parse_yaml(text, relative)
    except YAMLFileError as exc:
        return [], [CaseProblem(relative, exc.line, f"invalid YAML: {exc.problem}")]
    root = yaml.compose(text)  # parsed above, so this succeeds; its nodes give each case's line
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        return [], [CaseProblem(relative, 1, "a test file is a mapping with a `cases:` list")]
    extra = sorted(set(data) - {"cases"})
    problems = [CaseProblem(relative, 1, f"unknown top-level key(s): {', '.join(map(str, extra))}")] if extra else []
    assert isinstance(root, yaml.MappingNode)
    nodes = next(value for key, value in root.value if key.value == "cases")
    assert isinstance(nodes, yaml.SequenceNode)
    cases: list[LocatedCase] = []
    for node, raw in zip(nodes.value, data["cases"], strict=True):
        line = node.start_mark.line + 1
        if not isinstance(raw, dict):
            problems.append(CaseProblem(relative, line, "a case is a mapping"))
            continue
        try:
            cases.append(LocatedCase(relative, line, PolicyCase.model_validate(raw)))
        except ValidationError as exc:
            details = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'case'}: {e['msg']}" for e in exc.errors(include_url=False)
            )
            problems.append(CaseProblem(relative, line, details))
    return cases, problems


class CaseError(Exception):
    """The case cannot be evaluated (unknown tool, arguments the tool refuses)."""


def resolve_targets(case: PolicyCase, catalog: ToolCatalog) -> tuple[list[Target], str | None]:
    """The case's targets, and why a human must approve regardless of policy (blast radius)."""
    if case.targets is not None:
        return [Target(t.object, t.act) for t in case.targets], None
    if case.object is not None and case.act is not None:
        return [Target(case.object, case.act)], None
    assert case.tool is not None
    parsed = parse_in(catalog.tools, case.tool, case.args or {})
    if isinstance(parsed, str):
        raise CaseError(parsed)
    tool, args = parsed
    return tool.targets(args), blast_radius(tool, args)


@dataclass(frozen=True, slots=True)
class ApproverAnswer:
    """Whether `identity` may approve the case's call: `refusal` is None when it may."""

    identity: str
    refusal: str | None


@dataclass(frozen=True, slots=True)
class CaseResult:
    located: LocatedCase | None
    problem: CaseProblem | None
    passed: bool
    got: Effect | None
    rules: tuple[PolicyRule, ...]
    messages: tuple[str, ...]
    # The answer for every identity in the case's `approvers` and `not_approvers`, in order.
    approvers: tuple[ApproverAnswer, ...] = ()

    @property
    def file(self) -> str:
        return self.located.file if self.located else self.problem.file if self.problem else "?"

    @property
    def line(self) -> int | None:
        return self.located.line if self.located else self.problem.line if self.problem else None

    @property
    def title(self) -> str:
        return self.located.title if self.located else "(unreadable case)"

    @property
    def expected(self) -> str:
        return self.located.case.expect if self.located else "-"


def _normalise_rule_text(text: str) -> str:
    return re.sub(r"\s*,\s*", ", ", text.strip())


def rule_matches(expected: str, rule: PolicyRule) -> bool:
    """`expected` names `rule` by `file:line` (or just the line number) or by its text."""
    expected = expected.strip()
    if expected in (f"{rule.file}:{rule.line}", str(rule.line)):
        return True
    return _normalise_rule_text(expected) == _normalise_rule_text(rule.text)


def approver_refusal(snapshot: PolicySnapshot, identity: str, targets: Sequence[Target]) -> str | None:
    """Why `identity` may not approve a call with these targets (made for nobody in particular,
    as a case's calls are), or None: the runtime's own rule, on every target the runtime binds."""
    refusal = authority_refusal(snapshot, identity, on_behalf_of=None, targets=targets, verdict="approve")
    return None if refusal is None else refusal.message


def run_case(located: LocatedCase, snapshot: PolicySnapshot, catalog: ToolCatalog) -> CaseResult:
    case = located.case
    try:
        targets, bound = resolve_targets(case, catalog)
    except CaseError as exc:
        return CaseResult(located, None, False, None, (), (str(exc),))
    verdict = effective_decision(snapshot, case.as_subject(), targets, blast_radius=bound)
    effect, decision = verdict.effect, verdict.policy
    deciding = tuple(dict.fromkeys(t.rule for t in decision.deciding if t.rule is not None))
    messages: list[str] = []
    if effect != case.expect:
        why = decision.explain() if decision.targets else "the call has no targets"
        messages.append(f"expected {case.expect}, got {effect}: {verdict.escalation or why}")
    if case.rule is not None and effect == case.expect and not any(rule_matches(case.rule, r) for r in deciding):
        shown = ", ".join(f"{r.file}:{r.line} `{r.text}`" for r in deciding) or "no rule"
        messages.append(f"expected rule {case.rule!r} to decide, but {shown} did")
    answers = tuple(
        ApproverAnswer(identity, approver_refusal(snapshot, identity, targets))
        for identity in (*case.approvers, *case.not_approvers)
    )
    for answer in answers[: len(case.approvers)]:
        if answer.refusal is not None:
            messages.append(f"{answer.identity} should be allowed to approve, but: {answer.refusal}")
    for answer in answers[len(case.approvers) :]:
        if answer.refusal is None:
            messages.append(
                f"{answer.identity} should not be allowed to approve, but policy lets them approve every target"
            )
    return CaseResult(located, None, not messages, effect, deciding, tuple(messages), answers)


def run_cases(policy_dir: Path, snapshot: PolicySnapshot, catalog: ToolCatalog) -> list[CaseResult]:
    cases, problems = load_cases(policy_dir)
    results = [CaseResult(None, p, False, None, (), (p.message,)) for p in problems]
    results.extend(run_case(located, snapshot, catalog) for located in cases)
    return sorted(results, key=lambda r: (r.file, r.line or 0))


def format_table(results: Sequence[CaseResult]) -> str:
    rows = [("RESULT", "CASE", "EXPECTED", "GOT", "RULE", "WHERE")]
    for r in results:
        rule = ", ".join(f"{x.file}:{x.line}" for x in r.rules) or "-"
        where = f"{r.file}:{r.line}" if r.line else r.file
        rows.append(("pass" if r.passed else "FAIL", r.title, r.expected, r.got or "-", rule, where))
    widths = [min(max(len(row[i]) for row in rows), 60) for i in range(len(rows[0]))]
    lines = ["  ".join(cell[:60].ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    for r in results:
        if not r.passed:
            where = f"{r.file}:{r.line}" if r.line else r.file
            lines.extend(f"{where}: {r.title}: {message}" for message in r.messages)
    passed = sum(r.passed for r in results)
    lines.append(f"{passed} passed, {len(results) - passed} failed")
    return "\n".join(lines)


def junit_xml(results: Sequence[CaseResult], suite_prefix: str = "policy") -> bytes:
    """JUnit XML, one test suite per case file, as CI systems display it."""
    root = ET.Element("testsuites", name=suite_prefix)
    by_file: dict[str, list[CaseResult]] = {}
    for result in results:
        by_file.setdefault(result.file, []).append(result)
    for file, group in by_file.items():
        failures = sum(not r.passed for r in group)
        suite = ET.SubElement(
            root, "testsuite", name=f"{suite_prefix}.{file}", tests=str(len(group)), failures=str(failures), errors="0"
        )
        for result in group:
            element = ET.SubElement(
                suite,
                "testcase",
                classname=f"{suite_prefix}.{Path(file).stem}",
                name=result.title,
                file=file,
                line=str(result.line or 0),
            )
            if not result.passed:
                failure = ET.SubElement(element, "failure", message=result.messages[0] if result.messages else "failed")
                failure.text = "\n".join(result.messages)
    root.set("tests", str(len(results)))
    root.set("failures", str(sum(not r.passed for r in results)))
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document
