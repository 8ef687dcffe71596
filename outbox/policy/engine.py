"""Policy decisions: one function decides, for every tool call, allow, approve or deny.

The policy directory holds a casbin model (`model.conf`) and rule files (`*.csv`). A rule is
`p, subject, object, act, decision` with decision `allow`, `approve` (a human must approve) or
`deny`. Every target of a call is checked; per target deny beats approve beats allow, and the
strictest target decides the call. No matching rule means deny.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import casbin
from casbin.model import Model

from outbox.canonical import sha256_hex
from outbox.identities import canonical_or_none
from outbox.policy.index import IndexedRule, RoleGraph, RuleIndex
from outbox.policy.matching import Subject, act_match, object_match
from outbox.sqltypes import utcnow
from outbox.toolkit.base import Target

Effect = Literal["allow", "approve", "deny"]
# Strictest first: the order in which effects are probed and compared.
EFFECTS: tuple[Effect, ...] = ("deny", "approve", "allow")
_STRICTNESS = {effect: rank for rank, effect in enumerate(reversed(EFFECTS))}
_BY_RANK = {rank: effect for effect, rank in _STRICTNESS.items()}
_RANK_OF_TEXT: dict[str, int] = {str(effect): rank for effect, rank in _STRICTNESS.items()}

# The model shipped in `policies/model.conf`. When a policy directory's model means the same
# (same request, policy and role definitions, effect and matcher), decisions go through the rule
# index; any other model is evaluated by casbin's scan of every rule.
STANDARD_MODEL = """
[request_definition]
r = sub, obj, act, decision

[policy_definition]
p = sub, obj, act, decision

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.decision == p.decision && subjectMatch(r.sub, p.sub) && objectMatch(r.obj, p.obj) && actMatch(r.act, p.act)
"""


def strictness(effect: str) -> int:
    """deny 2, approve 1, allow 0: a larger number is stricter (-1 for anything else)."""
    return _RANK_OF_TEXT.get(effect, -1)


class PolicyLoadError(Exception):
    """A policy directory that cannot be used; carries the file and line when known."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        location = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(f"{location}{message}")
        self.file = file
        self.line = line


@dataclass(frozen=True, slots=True)
class PolicyRule:
    ptype: str
    values: tuple[str, ...]
    file: str
    line: int

    @property
    def text(self) -> str:
        return ", ".join((self.ptype, *self.values))

    def describe(self) -> dict[str, Any]:
        return {"rule": self.text, "source": f"{self.file}:{self.line}"}


@dataclass(frozen=True, slots=True)
class TargetDecision:
    target: Target
    effect: Effect
    rule: PolicyRule | None


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    effect: Effect
    targets: tuple[TargetDecision, ...]
    policy_version: str

    @property
    def deciding(self) -> tuple[TargetDecision, ...]:
        """The targets whose effect is the call's effect: the reasons for the decision."""
        return tuple(t for t in self.targets if t.effect == self.effect)

    def rules(self) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for t in self.deciding:
            if t.rule is not None:
                seen.setdefault(t.rule.text, t.rule.describe())
        return list(seen.values())

    def explain(self) -> str:
        """One sentence an agent can act on."""
        parts = []
        for t in self.deciding[:5]:
            why = f"rule `{t.rule.text}` ({t.rule.file}:{t.rule.line})" if t.rule else "no rule allows it"
            parts.append(f"{t.target.act} on {t.target.object}: {t.effect} by {why}")
        more = len(self.deciding) - 5
        return "; ".join(parts) + (f"; and {more} more target(s)" if more > 0 else "")


@dataclass(frozen=True)
class PolicySnapshot:
    """An immutable, fully loaded policy. Reloads build a new one and swap the reference."""

    directory: Path
    version: str
    git_commit: str | None
    loaded_at: datetime
    enforcer: casbin.Enforcer
    rules: tuple[PolicyRule, ...]
    _sources: dict[tuple[str, ...], PolicyRule] = field(repr=False)
    # None when the model is not the standard one: decisions then scan every rule with casbin.
    index: RuleIndex | None = field(default=None, repr=False)
    role_graph: RoleGraph = field(default_factory=lambda: RoleGraph(()), repr=False)
    # `p` rules in casbin's order (first occurrence of each distinct rule), as the index numbers them.
    _ordered: tuple[PolicyRule, ...] = field(default=(), repr=False)

    @property
    def indexed(self) -> bool:
        return self.index is not None

    @property
    def ordered_p_rules(self) -> tuple[PolicyRule, ...]:
        """The distinct `p` rules in the order the engine numbers them (first occurrence)."""
        return self._ordered

    def decide(self, subject: Subject, targets: Sequence[Target]) -> PolicyDecision:
        if self.index is None:
            return self.decide_by_scan(subject, targets)
        names = self.role_graph.closure_of(subject.names)
        return self._combine(tuple(self._decide_indexed(names, target) for target in targets))

    def decide_by_scan(self, subject: Subject, targets: Sequence[Target]) -> PolicyDecision:
        """casbin's own evaluation, every rule scanned: the reference the index must agree with."""
        return self._combine(tuple(self._decide_target(subject, target) for target in targets))

    def _combine(self, decisions: tuple[TargetDecision, ...]) -> PolicyDecision:
        if not decisions:
            # A call that touches nothing is a tool bug; never let it through silently.
            effect: Effect = "deny"
        else:
            effect = max((d.effect for d in decisions), key=_STRICTNESS.__getitem__)
        return PolicyDecision(effect=effect, targets=decisions, policy_version=self.version)

    def _decide_indexed(self, names: frozenset[str], target: Target) -> TargetDecision:
        assert self.index is not None
        best = self.index.best_match(names, target.object, target.act)
        if best is None:
            return TargetDecision(target, "deny", None)
        return TargetDecision(target, _BY_RANK[best.rank], self._ordered[best.ordinal])

    def _decide_target(self, subject: Subject, target: Target) -> TargetDecision:
        for effect in EFFECTS:
            matched, explain = self.enforcer.enforce_ex(subject, target.object, target.act, effect)
            if matched:
                return TargetDecision(target, effect, self._sources.get(("p", *explain)))
        return TargetDecision(target, "deny", None)

    def roles_of(self, name: str) -> list[str]:
        """Roles a principal holds through `g` rules (transitively)."""
        return sorted(self.role_graph.closure(name) - {name})


def subject_name(name: str) -> str:
    """The name a rule's subject stands for: a human identity (`user:…`, `slack:…`) in its
    canonical form (`outbox.identities`), so `user:Lead@Example.com` in a rule is the person
    `user:lead@example.com` every approver identity is parsed into. Other names, and identities
    that do not parse (which `outbox policy check` reports), stay as written and match nobody's
    canonical identity."""
    if name.split(":", 1)[0].casefold() not in ("user", "slack"):
        return name
    return canonical_or_none(name) or name


def canonical_values(rule: PolicyRule) -> tuple[str, ...]:
    """The rule's fields with its subject (`p`) or both names (`g`) as `subject_name` gives them."""
    if rule.ptype == "g":
        return tuple(subject_name(v) for v in rule.values)
    return (subject_name(rule.values[0]), *rule.values[1:])


def _parse_rule_line(raw: str, relative: str, number: int) -> PolicyRule | None:
    line = raw.strip()
    if not line or line.startswith("#"):
        return None
    try:
        row = next(csv.reader(io.StringIO(line), skipinitialspace=True))
    except csv.Error as exc:
        raise PolicyLoadError(f"unreadable CSV: {exc}", file=relative, line=number) from exc
    values = tuple(v.strip() for v in row)
    ptype, rest = values[0], values[1:]
    if ptype == "p":
        if len(rest) != 4:
            raise PolicyLoadError(
                f"a `p` rule has 4 fields (subject, object, act, decision), found {len(rest)}",
                file=relative,
                line=number,
            )
        if rest[3] not in EFFECTS:
            raise PolicyLoadError(
                f"decision must be allow, approve or deny, not {rest[3]!r}", file=relative, line=number
            )
        if any(not v for v in rest):
            raise PolicyLoadError("empty field in rule", file=relative, line=number)
    elif ptype == "g":
        if len(rest) != 2 or not all(rest):
            raise PolicyLoadError("a `g` rule has 2 fields (member, role)", file=relative, line=number)
    else:
        raise PolicyLoadError(f"unknown rule type {ptype!r} (expected p or g)", file=relative, line=number)
    return PolicyRule(ptype, rest, relative, number)


def parse_rule_text(text: str, relative: str) -> tuple[list[PolicyRule], list[PolicyLoadError]]:
    """Every well-formed rule of one file, and a problem (with its line) for each other line."""
    rules: list[PolicyRule] = []
    problems: list[PolicyLoadError] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        try:
            rule = _parse_rule_line(raw, relative, number)
        except PolicyLoadError as exc:
            problems.append(exc)
            continue
        if rule is not None:
            rules.append(rule)
    return rules, problems


def policy_files(directory: Path) -> list[Path]:
    """Every file that makes up a policy version (rules, model, tools, mail config, tests)."""
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


def read_policy_files(directory: Path) -> dict[str, bytes]:
    """The policy directory's files, read once: what is hashed is exactly what is parsed."""
    return {path.relative_to(directory).as_posix(): path.read_bytes() for path in policy_files(directory)}


def version_of(files: Mapping[str, bytes]) -> str:
    chunks = [
        f"{relative}\0{sha256_hex(files[relative].decode('utf-8', 'surrogateescape'))}" for relative in sorted(files)
    ]
    return "sha256:" + sha256_hex("\n".join(chunks))[:16]


def content_version(directory: Path) -> str:
    return version_of(read_policy_files(directory))


def git_commit_of(directory: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(directory), "log", "-1", "--format=%H", "--", "."],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def _subject_match(request_subject: Any, rule_subject: str, enforcer: casbin.Enforcer) -> bool:
    names: Iterable[str] = request_subject.names if isinstance(request_subject, Subject) else (str(request_subject),)
    rm = enforcer.get_role_manager()
    return any(name == rule_subject or rm.has_link(name, rule_subject) for name in names)


def parse_model(text: str) -> Model:
    model = Model()
    try:
        model.load_model_from_text(text)
    except Exception as exc:  # casbin raises bare exceptions for malformed models
        raise PolicyLoadError(f"invalid casbin model: {exc}", file="model.conf") from exc
    for section, key, expected in (("r", "r", 4), ("p", "p", 4)):
        tokens = model.model.get(section, {}).get(key)
        if tokens is None or len(tokens.tokens) != expected:
            raise PolicyLoadError(f"model must define {key} with {expected} fields", file="model.conf")
    return model


def _model_signature(model: Model) -> tuple[str, ...]:
    def value(section: str, key: str) -> str:
        assertion = model.model.get(section, {}).get(key)
        return re.sub(r"\s+", "", assertion.value) if assertion is not None else ""

    sections = tuple(sorted((sec, key) for sec in model.model for key in model.model[sec]))
    keys = (("r", "r"), ("p", "p"), ("g", "g"), ("e", "e"), ("m", "m"))
    return (repr(sections), *(value(sec, key) for sec, key in keys))


_STANDARD_SIGNATURE = _model_signature(parse_model(STANDARD_MODEL))


def is_standard_model(model: Model) -> bool:
    """The model means what `STANDARD_MODEL` means, so the rule index decides as casbin would."""
    return _model_signature(model) == _STANDARD_SIGNATURE


def rule_files_of(files: Mapping[str, bytes]) -> list[str]:
    """The rule files: `*.csv` at the top of the policy directory, in name order."""
    return sorted(name for name in files if "/" not in name and name.endswith(".csv"))


def load_policy(directory: Path) -> PolicySnapshot:
    """Load and validate a policy directory; raise PolicyLoadError naming the file and line."""
    directory = directory.resolve()
    if not (directory / "model.conf").is_file():
        raise PolicyLoadError("model.conf is missing", file=str(directory / "model.conf"))
    files = read_policy_files(directory)
    return build_snapshot(directory, files, git_commit=git_commit_of(directory))


def build_snapshot(directory: Path, files: Mapping[str, bytes], *, git_commit: str | None) -> PolicySnapshot:
    """A snapshot from the policy files' contents (as read once by `read_policy_files`)."""
    if "model.conf" not in files:
        raise PolicyLoadError("model.conf is missing", file=str(directory / "model.conf"))
    model = parse_model(files["model.conf"].decode("utf-8"))

    rules: list[PolicyRule] = []
    rule_files = rule_files_of(files)
    if not rule_files:
        raise PolicyLoadError("no rule files (*.csv) in the policy directory", file=str(directory))
    for name in rule_files:
        try:
            text = files[name].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyLoadError(f"not UTF-8: {exc}", file=name) from exc
        parsed, problems = parse_rule_text(text, name)
        if problems:
            raise problems[0]
        rules.extend(parsed)

    enforcer = casbin.Enforcer(model)
    enforcer.add_function("objectMatch", object_match)
    enforcer.add_function("actMatch", act_match)
    enforcer.add_function("subjectMatch", lambda r_sub, p_sub: _subject_match(r_sub, p_sub, enforcer))
    # casbin keeps the first of identical rules; so do we, and number them in the same order.
    # Rules are keyed by what they mean: human identities in canonical form (`subject_name`).
    sources: dict[tuple[str, ...], PolicyRule] = {}
    for rule in rules:
        sources.setdefault((rule.ptype, *canonical_values(rule)), rule)
    ordered_keys = [key for key in sources if key[0] == "p"]
    ordered_p = tuple(sources[key] for key in ordered_keys)
    links = [key[1:] for key in sources if key[0] == "g"]
    # `add_policies` checks for duplicates against the (empty) model once, not per rule.
    if ordered_p:
        enforcer.get_model().add_policies("p", "p", [list(key[1:]) for key in ordered_keys])
    if links:
        enforcer.get_model().add_policies("g", "g", [list(v) for v in links])
    enforcer.build_role_links()
    index = None
    if is_standard_model(model):
        index = RuleIndex(
            [
                IndexedRule(ordinal, key[1], key[2], key[3], _RANK_OF_TEXT[key[4]])
                for ordinal, key in enumerate(ordered_keys)
            ]
        )
    return PolicySnapshot(
        directory=directory,
        version=version_of(files),
        git_commit=git_commit,
        loaded_at=utcnow(),
        enforcer=enforcer,
        rules=tuple(rules),
        _sources=sources,
        index=index,
        role_graph=RoleGraph((m, r) for m, r in links),
        _ordered=ordered_p,
    )
