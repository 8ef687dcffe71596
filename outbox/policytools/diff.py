"""`outbox policy diff`: what a policy change *does*, decision by decision.

Reading a rule diff tells a reviewer which lines changed, not who can now do what. Both versions
are evaluated over the same probes, and every probe whose effect changes is listed with the rule
that decided it on each side. The probes are:

- every subject named in either version (agents, roles, people, each on its own) crossed with
  every object either version's rules or tools mention (each pattern turned into a concrete
  example: `*` becomes `{any}`, a template keeps its `{param}`), with the acts used on that kind
  of object;
- the test cases of both versions (their subject, roles and targets);
- optionally the calls recorded in the database (agent, its roles, each target).

Pairs that no changed rule can touch are skipped when the model is unchanged, so a one-line
change to a large policy is diffed quickly.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from outbox.policy.effective import APPROVE_ACT
from outbox.policy.engine import PolicyRule, PolicySnapshot, TargetDecision, load_policy, strictness
from outbox.policy.matching import Subject, act_match, acts_of, example_objects, object_match
from outbox.policytools.cases import CaseError, load_cases, resolve_targets
from outbox.policytools.repository import RecordedCall
from outbox.policytools.targets import ToolCatalog, load_catalog, scheme_of
from outbox.toolkit.base import Target


class DiffError(Exception):
    """A version that cannot be materialised or loaded."""


# --- Versions -------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False, timeout=60)


@contextlib.contextmanager
def materialize(ref: str, policy_dir: Path) -> Iterator[Path]:
    """A directory holding the policy at `ref`: `ref` itself when it is a directory, else the git
    revision `ref` of the repository `policy_dir` belongs to, exported with `git archive`."""
    as_path = Path(ref)
    if as_path.is_dir():
        yield as_path.resolve()
        return
    policy_dir = policy_dir.resolve()
    top = _git(policy_dir, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise DiffError(f"{ref!r} is not a directory, and {policy_dir} is not in a git repository")
    root = Path(top.stdout.decode().strip())
    if _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode != 0:
        raise DiffError(f"{ref!r} is neither a directory nor a git revision of {root}")
    subpath = policy_dir.relative_to(root).as_posix()
    archive = _git(root, "archive", "--format=tar", ref, "--", subpath)
    if archive.returncode != 0:
        message = archive.stderr.decode(errors="replace").strip()
        raise DiffError(f"{subpath} does not exist at {ref}: {message}")
    scratch = Path(tempfile.mkdtemp(prefix="outbox-policy-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(scratch, filter="data")
        yield scratch / subpath
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass(frozen=True)
class PolicyVersion:
    label: str
    snapshot: PolicySnapshot
    catalog: ToolCatalog

    @property
    def p_rules(self) -> list[PolicyRule]:
        return [r for r in self.snapshot.rules if r.ptype == "p"]

    @property
    def g_links(self) -> set[tuple[str, str]]:
        return {(r.values[0], r.values[1]) for r in self.snapshot.rules if r.ptype == "g"}


def load_version(directory: Path, label: str) -> PolicyVersion:
    try:
        snapshot = load_policy(directory)
    except Exception as exc:
        raise DiffError(f"{label}: the policy does not load: {exc}") from exc
    return PolicyVersion(label, snapshot, load_catalog(directory))


# --- Probes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    subject: Subject
    target: Target


@dataclass
class ProbeSet:
    """Subjects × targets (the cross product), plus explicit probes (test cases, recorded calls).

    Origins say where a target or probe came from: `rules`, `tools`, a case's `file:line`, `audit`.
    """

    subjects: set[str] = field(default_factory=set)
    targets: dict[Target, set[str]] = field(default_factory=lambda: defaultdict(set))
    explicit: dict[Probe, set[str]] = field(default_factory=lambda: defaultdict(set))

    def __len__(self) -> int:
        return len(self.subjects) * len(self.targets) + len(self.explicit)


def _subjects(version: PolicyVersion) -> set[str]:
    names = {r.values[0] for r in version.p_rules}
    for member, role in version.g_links:
        names.update((member, role))
    return names


def _objects_and_acts(version: PolicyVersion) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Example objects (with origin) and the acts seen per scheme, from rules and tool patterns."""
    objects: dict[str, set[str]] = defaultdict(set)
    acts: dict[str, set[str]] = defaultdict(set)
    for rule in version.p_rules:
        for obj in example_objects(rule.values[1]):
            objects[obj].add("rules")
        acts[scheme_of(rule.values[1])].update(acts_of(rule.values[2]) or ())
    for _tool, target in version.catalog.all_patterns():
        for obj in example_objects(target.object):
            objects[obj].add("tools")
        acts[scheme_of(target.object)].add(target.act)
    return objects, acts


def build_probes(
    versions: Sequence[PolicyVersion], recorded: Iterable[RecordedCall] = (), policy_dirs: Sequence[Path] = ()
) -> ProbeSet:
    probes = ProbeSet()
    objects: dict[str, set[str]] = defaultdict(set)
    acts: dict[str, set[str]] = defaultdict(set)
    for version in versions:
        probes.subjects |= _subjects(version)
        found_objects, found_acts = _objects_and_acts(version)
        for obj, origin in found_objects.items():
            objects[obj] |= origin
        for scheme, names in found_acts.items():
            acts[scheme] |= names
    every_act: set[str] = set().union(*acts.values()) if acts else set()
    for obj, origin in objects.items():
        for act in (acts.get(scheme_of(obj)) or every_act) | {APPROVE_ACT}:
            probes.targets[Target(obj, act)] |= origin
    for version, directory in zip(versions, policy_dirs, strict=False):
        cases, _problems = load_cases(directory)
        for located in cases:
            try:
                targets, _gate = resolve_targets(located.case, version.catalog)
            except CaseError:
                continue
            for target in targets:
                probes.explicit[Probe(located.case.as_subject(), target)].add(f"case {located.file}:{located.line}")
    for call in recorded:
        probes.explicit[Probe(Subject(call.agent, call.roles), Target(call.object, call.act))].add("audit")
    return probes


# --- Evaluation -----------------------------------------------------------------------------

ChangeKind = Literal["grant", "restrict"]


@dataclass(frozen=True, slots=True)
class DecisionChange:
    subject: Subject
    target: Target
    before: TargetDecision
    after: TargetDecision
    origins: tuple[str, ...]

    @property
    def kind(self) -> ChangeKind:
        """`grant` when the call becomes more permissive (deny → approve → allow)."""
        return "grant" if strictness(self.after.effect) < strictness(self.before.effect) else "restrict"


@dataclass
class PolicyDiff:
    base: str
    head: str
    base_version: str
    head_version: str
    probes: int
    evaluated: int
    changes: list[DecisionChange]

    @property
    def grants(self) -> list[DecisionChange]:
        return [c for c in self.changes if c.kind == "grant"]


def _changed_rules(base: PolicyVersion, head: PolicyVersion) -> list[tuple[str, str, str]]:
    before = {r.values for r in base.p_rules}
    after = {r.values for r in head.p_rules}
    return [(v[0], v[1], v[2]) for v in before ^ after]


class _Pruner:
    """Which probes a change can affect. With the same (standard) model on both sides, a decision
    can change only if a rule that differs matches it, or the subject's roles (`g`) differ."""

    def __init__(self, base: PolicyVersion, head: PolicyVersion, *, exhaustive: bool = False) -> None:
        self.base, self.head = base, head
        self.exhaustive = exhaustive or not (base.snapshot.indexed and head.snapshot.indexed)
        self.changed = _changed_rules(base, head)
        self.g_changed = bool(base.g_links ^ head.g_links)
        self._touching: dict[Target, frozenset[str]] = {}

    def names(self, subject: Subject) -> tuple[frozenset[str], frozenset[str]]:
        return (
            self.base.snapshot.role_graph.closure_of(subject.names),
            self.head.snapshot.role_graph.closure_of(subject.names),
        )

    def touching(self, target: Target) -> frozenset[str]:
        """Subjects of the changed rules that match `target`."""
        found = self._touching.get(target)
        if found is None:
            found = frozenset(
                sub for sub, obj, act in self.changed if object_match(target.object, obj) and act_match(target.act, act)
            )
            self._touching[target] = found
        return found

    def may_change(self, subject: Subject, target: Target) -> bool:
        if self.exhaustive:
            return True
        before, after = self.names(subject)
        if self.g_changed and before != after:
            return True
        return bool(self.touching(target) & (before | after))


def _candidates(probes: ProbeSet, pruner: _Pruner) -> Iterator[tuple[Probe, set[str]]]:
    subjects = [Subject(name) for name in sorted(probes.subjects)]
    if pruner.exhaustive:
        for subject in subjects:
            for target, origins in probes.targets.items():
                yield Probe(subject, target), origins
    else:
        regrouped = {s for s in subjects if pruner.g_changed and len(set(pruner.names(s))) > 1}
        for target, origins in probes.targets.items():
            touched = pruner.touching(target)
            for subject in subjects:
                if subject in regrouped or (touched and pruner.may_change(subject, target)):
                    yield Probe(subject, target), origins
    for probe, origins in probes.explicit.items():
        if pruner.may_change(probe.subject, probe.target):
            yield probe, origins


def diff_versions(
    base: PolicyVersion, head: PolicyVersion, probes: ProbeSet, *, exhaustive: bool = False
) -> PolicyDiff:
    """Evaluate the probes on both versions; `exhaustive` skips pruning (for verifying it)."""
    pruner = _Pruner(base, head, exhaustive=exhaustive)
    changes: list[DecisionChange] = []
    evaluated = 0
    for probe, origins in _candidates(probes, pruner):
        evaluated += 1
        before = base.snapshot.decide(probe.subject, [probe.target]).targets[0]
        after = head.snapshot.decide(probe.subject, [probe.target]).targets[0]
        if before.effect != after.effect:
            changes.append(DecisionChange(probe.subject, probe.target, before, after, tuple(sorted(origins))))
    changes.sort(key=lambda c: (c.kind != "grant", c.subject.principal, c.subject.roles, c.target.object, c.target.act))
    return PolicyDiff(
        base.label, head.label, base.snapshot.version, head.snapshot.version, len(probes), evaluated, changes
    )


# --- Output ---------------------------------------------------------------------------------


def _who(subject: Subject) -> str:
    return subject.principal + (f" (+{', '.join(subject.roles)})" if subject.roles else "")


def _rule(decision: TargetDecision) -> str:
    return f"{decision.rule.file}:{decision.rule.line} `{decision.rule.text}`" if decision.rule else "no rule"


def format_text(diff: PolicyDiff) -> str:
    grants = len(diff.grants)
    lines = [
        f"policy diff {diff.base} ({diff.base_version}) → {diff.head} ({diff.head_version}): "
        f"{len(diff.changes)} decision(s) change, {grants} more permissive, {len(diff.changes) - grants} stricter "
        f"({diff.evaluated} of {diff.probes} probes evaluated)"
    ]
    for change in diff.changes:
        marker = "GRANT   " if change.kind == "grant" else "RESTRICT"
        lines.append(
            f"{marker} {_who(change.subject)} {change.target.act} {change.target.object}: "
            f"{change.before.effect} → {change.after.effect}"
        )
        lines.append(f"         before: {_rule(change.before)}")
        lines.append(f"         after:  {_rule(change.after)}")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def format_markdown(diff: PolicyDiff, *, limit: int = 200) -> str:
    """A pull-request comment: summary first, then one table row per changed decision."""
    grants = len(diff.grants)
    head = f"### Policy diff: `{diff.base}` → `{diff.head}`\n\n"
    versions = f"`{diff.base_version}` → `{diff.head_version}`, {diff.evaluated} of {diff.probes} probes evaluated."
    if not diff.changes:
        return head + f"No decision changes. {versions}\n"
    lines = [
        head + f"**{len(diff.changes)} decision(s) change: {grants} more permissive"
        f"{' ⚠️' if grants else ''}, {len(diff.changes) - grants} stricter.** {versions}\n",
        "| Change | Subject | Act | Object | Before | After | Rule before | Rule after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for change in diff.changes[:limit]:
        kind = "⚠️ grant" if change.kind == "grant" else "restrict"
        cells = [
            kind,
            f"`{_who(change.subject)}`",
            f"`{change.target.act}`",
            f"`{change.target.object}`",
            change.before.effect,
            change.after.effect,
            _rule(change.before),
            _rule(change.after),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if len(diff.changes) > limit:
        lines.append(f"\n…and {len(diff.changes) - limit} more; run `outbox policy diff` locally for all of them.")
    return "\n".join(lines) + "\n"


def format_json(diff: PolicyDiff) -> str:
    def side(decision: TargetDecision) -> dict[str, object]:
        return {"effect": decision.effect, "rule": decision.rule.describe() if decision.rule else None}

    return json.dumps(
        {
            "base": {"label": diff.base, "version": diff.base_version},
            "head": {"label": diff.head, "version": diff.head_version},
            "probes": diff.probes,
            "evaluated": diff.evaluated,
            "changes": [
                {
                    "kind": c.kind,
                    "subject": c.subject.principal,
                    "roles": list(c.subject.roles),
                    "object": c.target.object,
                    "act": c.target.act,
                    "before": side(c.before),
                    "after": side(c.after),
                    "origins": list(c.origins),
                }
                for c in diff.changes
            ],
        },
        indent=2,
    )
