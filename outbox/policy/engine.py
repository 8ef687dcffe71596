"""Policy decisions: one function decides, for every tool call, allow, approve or deny.

The policy directory holds a casbin model (`model.conf`) and rule files (`*.csv`). A rule is
`p, subject, object, act, decision` with decision `allow`, `approve` (a human must approve) or
`deny`. Every target of a call is checked; per target deny beats approve beats allow, and the
strictest target decides the call. No matching rule means deny.
"""

from __future__ import annotations

import csv
import io
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import casbin
from casbin.model import Model

from outbox.canonical import sha256_hex
from outbox.policy.matching import Subject, act_match, object_match
from outbox.sqltypes import utcnow
from outbox.tools.base import Target

Effect = Literal["allow", "approve", "deny"]
# Strictest first: the order in which effects are probed and compared.
EFFECTS: tuple[Effect, ...] = ("deny", "approve", "allow")
_STRICTNESS = {effect: rank for rank, effect in enumerate(reversed(EFFECTS))}


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

    def decide(self, subject: Subject, targets: Sequence[Target]) -> PolicyDecision:
        decisions = tuple(self._decide_target(subject, target) for target in targets)
        if not decisions:
            # A call that touches nothing is a tool bug; never let it through silently.
            effect: Effect = "deny"
        else:
            effect = max((d.effect for d in decisions), key=_STRICTNESS.__getitem__)
        return PolicyDecision(effect=effect, targets=decisions, policy_version=self.version)

    def _decide_target(self, subject: Subject, target: Target) -> TargetDecision:
        for effect in EFFECTS:
            matched, explain = self.enforcer.enforce_ex(subject, target.object, target.act, effect)
            if matched:
                return TargetDecision(target, effect, self._sources.get(("p", *explain)))
        return TargetDecision(target, "deny", None)

    def roles_of(self, name: str) -> list[str]:
        """Roles a principal holds through `g` rules (transitively)."""
        return list(self.enforcer.get_implicit_roles_for_user(name))


def _parse_rule_file(path: Path, relative: str) -> list[PolicyRule]:
    rules: list[PolicyRule] = []
    text = path.read_text(encoding="utf-8")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
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
        rules.append(PolicyRule(ptype, rest, relative, number))
    return rules


def policy_files(directory: Path) -> list[Path]:
    """Every file that makes up a policy version (rules, model, tools, mail config, tests)."""
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


def content_version(directory: Path) -> str:
    chunks = []
    for path in policy_files(directory):
        relative = path.relative_to(directory).as_posix()
        chunks.append(f"{relative}\0{sha256_hex(path.read_bytes().decode('utf-8', 'surrogateescape'))}")
    return "sha256:" + sha256_hex("\n".join(chunks))[:16]


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


def load_policy(directory: Path) -> PolicySnapshot:
    """Load and validate a policy directory; raise PolicyLoadError naming the file and line."""
    directory = directory.resolve()
    model_path = directory / "model.conf"
    if not model_path.is_file():
        raise PolicyLoadError("model.conf is missing", file=str(model_path))
    model = Model()
    try:
        model.load_model_from_text(model_path.read_text(encoding="utf-8"))
    except Exception as exc:  # casbin raises bare exceptions for malformed models
        raise PolicyLoadError(f"invalid casbin model: {exc}", file="model.conf") from exc
    for section, key, expected in (("r", "r", 4), ("p", "p", 4)):
        tokens = model.model.get(section, {}).get(key)
        if tokens is None or len(tokens.tokens) != expected:
            raise PolicyLoadError(f"model must define {key} with {expected} fields", file="model.conf")

    rules: list[PolicyRule] = []
    rule_files = sorted(directory.glob("*.csv"))
    if not rule_files:
        raise PolicyLoadError("no rule files (*.csv) in the policy directory", file=str(directory))
    for path in rule_files:
        rules.extend(_parse_rule_file(path, path.name))

    enforcer = casbin.Enforcer(model)
    enforcer.add_function("objectMatch", object_match)
    enforcer.add_function("actMatch", act_match)
    enforcer.add_function("subjectMatch", lambda r_sub, p_sub: _subject_match(r_sub, p_sub, enforcer))
    sources: dict[tuple[str, ...], PolicyRule] = {}
    for rule in rules:
        if rule.ptype == "p":
            enforcer.get_model().add_policy("p", "p", list(rule.values))
        else:
            enforcer.get_model().add_policy("g", "g", list(rule.values))
        sources.setdefault((rule.ptype, *rule.values), rule)
    enforcer.build_role_links()
    return PolicySnapshot(
        directory=directory,
        version=content_version(directory),
        git_commit=git_commit_of(directory),
        loaded_at=utcnow(),
        enforcer=enforcer,
        rules=tuple(rules),
        _sources=sources,
    )
