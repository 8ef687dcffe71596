"""`outbox policy check`: what a reviewer should know about a policy directory before merging it.

Errors are things that are wrong (a file that does not load, a rule that can never match because
it names a tool, sending subdomain, cluster or act that does not exist, a subject that is not an
identity, a matcher with casbin's prefix or unanchored matching). Warnings are things that are
probably wrong or dangerous (a rule another rule always overrides, a wildcard `allow` on a
destructive act, a pattern that looks like a regex). `--strict` turns warnings into errors.

`http:` objects are always in the canonical URL form (`outbox/urls.py`): a rule that names a host
or path in another form (`localhost`, `[::1]`, `API.internal`, `/a//b`, `%2f`) can never match,
and a rule set that allows on one name of a host what it denies on another (`localhost` and
`127.0.0.1`) says two things about one host; both are errors.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from outbox.agents.service import AgentError, normalise_role
from outbox.identities import InvalidIdentity, parse_principal
from outbox.policy.effective import APPROVE_ACT
from outbox.policy.engine import (
    EFFECTS,
    PolicyLoadError,
    PolicyRule,
    is_standard_model,
    parse_model,
    parse_rule_text,
    read_policy_files,
    rule_files_of,
    strictness,
    version_of,
)
from outbox.policy.index import RoleGraph
from outbox.policy.matching import (
    ObjectPattern,
    acts_of,
    literal_prefix,
    pattern_covers,
    patterns_intersect,
    template_to_pattern,
)
from outbox.policy.outbound import CALLBACK_PATTERN
from outbox.policytools.cases import load_cases
from outbox.policytools.targets import ToolCatalog, load_catalog, scheme_of
from outbox.tools.http_request import HttpRequestTool
from outbox.urls import URLRefused, canonical_host, canonical_path, lowercase_path, normalise_path_text

Severity = Literal["error", "warning"]
SUBJECT_KINDS = ("agent", "role", "user", "slack")
HUMAN_KINDS = ("user", "slack")
# As `outbox agents create` accepts them.
_AGENT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
# As the approvals service accepts human identities.
# casbin functions whose matching is by prefix (`keyMatch`: `*` crosses `/`) or unanchored
# (`regexMatch`): with them `send_email*` can match `send_email_all`.
_LOOSE_MATCHERS = re.compile(r"\b(keyMatch\d?|keyGet\d?|regexMatch|globMatch)\s*\(")
_REGEX_HINTS = (".*", "^", "$", "\\", "[", "(", ".+")
_TEMPLATE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    code: str
    message: str
    file: str | None = None
    line: int | None = None

    @property
    def location(self) -> str:
        if self.file and self.line:
            return f"{self.file}:{self.line}"
        return self.file or "-"


@dataclass(frozen=True, slots=True)
class KnownPrincipals:
    """What the database knows: agents (`agent:name`) and the roles agents hold (`role:x`)."""

    agents: frozenset[str]
    roles: frozenset[str]


@dataclass
class CheckReport:
    directory: Path
    version: str | None
    findings: list[Finding] = field(default_factory=list)
    rules: int = 0
    tools: tuple[str, ...] = ()

    def errors(self, *, strict: bool = False) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error" or strict]

    def failed(self, *, strict: bool = False) -> bool:
        return bool(self.errors(strict=strict))

    def add(self, severity: Severity, code: str, message: str, rule: PolicyRule | None = None) -> None:
        self.findings.append(Finding(severity, code, message, rule.file if rule else None, rule.line if rule else None))

    def format_text(self, display_dir: str) -> str:
        lines = []
        for f in self.findings:
            where = f"{display_dir}/{f.location}" if f.file else display_dir
            lines.append(f"{where}: {f.severity}: [{f.code}] {f.message}")
        errors = sum(f.severity == "error" for f in self.findings)
        lines.append(
            f"{display_dir}: {self.rules} rule(s), {len(self.tools)} tool(s), version {self.version or '-'}: "
            f"{errors} error(s), {len(self.findings) - errors} warning(s)"
        )
        return "\n".join(lines)

    def format_github(self, display_dir: str, *, strict: bool = False) -> str:
        """GitHub Actions workflow commands: each finding becomes an annotation on the PR diff."""
        lines = []
        for f in self.findings:
            level = "error" if f.severity == "error" or strict else "warning"
            where = f"file={display_dir}/{f.file}" + (f",line={f.line}" if f.line else "") if f.file else ""
            message = f.message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
            lines.append(f"::{level} {where},title={f.code}::{message}".replace(" ,", " "))
        return "\n".join(lines)

    def format_json(self) -> str:
        return json.dumps(
            {
                "directory": str(self.directory),
                "version": self.version,
                "rules": self.rules,
                "tools": list(self.tools),
                "findings": [asdict(f) for f in self.findings],
            },
            indent=2,
        )


def check_policy(
    directory: Path, *, catalog: ToolCatalog | None = None, known: KnownPrincipals | None = None
) -> CheckReport:
    directory = directory.resolve()
    report = CheckReport(directory, None)
    if not directory.is_dir():
        report.add("error", "missing", f"{directory} is not a directory")
        return report
    files = read_policy_files(directory)
    report.version = version_of(files)
    _check_model(files, report)
    rules = _parse_rules(files, report)
    report.rules = len(rules)
    catalog = catalog if catalog is not None else load_catalog(directory)
    report.tools = tuple(catalog.tools)
    if catalog.load_error is not None:
        report.findings.append(Finding("error", "tools", f"tools do not load: {catalog.load_error}"))
    if catalog.undescribed:
        report.findings.append(
            Finding(
                "warning",
                "tool-targets-unknown",
                f"tool(s) {', '.join(catalog.undescribed)} do not declare target_patterns(); "
                "rules cannot be checked against their objects",
            )
        )
    _check_cases(directory, report)
    RuleAnalysis(rules, catalog, known, report).run()
    report.findings.sort(key=lambda f: (f.file or "", f.line or 0, f.code))
    return report


def _check_model(files: dict[str, bytes], report: CheckReport) -> None:
    if "model.conf" not in files:
        report.findings.append(Finding("error", "syntax", "model.conf is missing"))
        return
    text = files["model.conf"].decode("utf-8", "replace")
    matcher_line = next((n for n, raw in enumerate(text.splitlines(), start=1) if raw.strip().startswith("m ")), None)
    try:
        model = parse_model(text)
    except PolicyLoadError as exc:
        report.findings.append(Finding("error", "syntax", str(exc).removeprefix("model.conf: "), "model.conf"))
        return
    for match in _LOOSE_MATCHERS.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        if text.splitlines()[line - 1].lstrip().startswith("#"):
            continue
        report.findings.append(
            Finding(
                "error",
                "loose-matcher",
                f"{match.group(1)} matches by prefix or unanchored (`send_email*` would match "
                "`send_email_all`); use objectMatch and actMatch",
                "model.conf",
                line,
            )
        )
    if not is_standard_model(model):
        report.findings.append(
            Finding(
                "warning",
                "model-nonstandard",
                "the model differs from the standard one: decisions scan every rule with casbin (no index), "
                "and check cannot vouch for its matching semantics",
                "model.conf",
                matcher_line,
            )
        )


def _parse_rules(files: dict[str, bytes], report: CheckReport) -> list[PolicyRule]:
    names = rule_files_of(files)
    if not names:
        report.findings.append(Finding("error", "syntax", "no rule files (*.csv) in the policy directory"))
    rules: list[PolicyRule] = []
    for name in names:
        try:
            text = files[name].decode("utf-8")
        except UnicodeDecodeError as exc:
            report.findings.append(Finding("error", "syntax", f"not UTF-8: {exc}", name))
            continue
        parsed, problems = parse_rule_text(text, name)
        rules.extend(parsed)
        for problem in problems:
            message = str(problem).split(": ", 1)[1] if problem.line else str(problem)
            report.findings.append(Finding("error", "syntax", message, problem.file, problem.line))
    return rules


def _check_cases(directory: Path, report: CheckReport) -> None:
    _cases, problems = load_cases(directory)
    for problem in problems:
        report.findings.append(Finding("error", "syntax", problem.message, problem.file, problem.line))


class RuleAnalysis:
    """The per-rule checks, over one parsed rule set and tool catalog."""

    def __init__(
        self, rules: Sequence[PolicyRule], catalog: ToolCatalog, known: KnownPrincipals | None, report: CheckReport
    ) -> None:
        self.report = report
        self.catalog = catalog
        self.known = known
        self.g_rules = [r for r in rules if r.ptype == "g"]
        seen: dict[tuple[str, ...], PolicyRule] = {}
        self.duplicates: list[tuple[PolicyRule, PolicyRule]] = []
        for rule in rules:
            key = (rule.ptype, *rule.values)
            if key in seen:
                self.duplicates.append((rule, seen[key]))
            else:
                seen[key] = rule
        self.p_rules = [r for r in seen.values() if r.ptype == "p"]
        self.graph = RoleGraph((r.values[0], r.values[1]) for r in self.g_rules if len(r.values) == 2)
        self.patterns = [(name, t.act, template_to_pattern(t.object)) for name, t in catalog.all_patterns()]
        if self.patterns:
            # Callbacks are requests too: act `callback` on any `http:` object (policy/outbound.py).
            self.patterns.append(("callbacks", CALLBACK_PATTERN.act, template_to_pattern(CALLBACK_PATTERN.object)))
        self.schemes = {scheme_of(p) for _name, _act, p in self.patterns}
        http_tool = catalog.tools.get(HttpRequestTool.name)
        self.http_config = http_tool.config if isinstance(http_tool, HttpRequestTool) else None

    def run(self) -> None:
        for rule, first in self.duplicates:
            self.report.add("warning", "duplicate", f"same rule as {first.file}:{first.line}", rule)
        for rule in self.g_rules:
            self._check_g(rule)
        for rule in self.p_rules:
            self._check_subject(rule, rule.values[0])
            self._check_object(rule)
            self._check_risky(rule)
        self._check_http_aliases()
        self._check_roles()
        self._check_overrides()

    # Subjects -----------------------------------------------------------------------------

    def _check_subject(self, rule: PolicyRule, subject: str) -> bool:
        if "*" in subject:
            self.report.add(
                "error",
                "subject-pattern",
                f"subject {subject!r}: subjects are matched exactly, `*` is not a wildcard here; grant a role instead",
                rule,
            )
            return False
        kind, _, name = subject.partition(":")
        if kind not in SUBJECT_KINDS or not name:
            self.report.add(
                "error",
                "subject-kind",
                f"subject {subject!r} is not an identity: use agent:<name>, role:<name>, user:<id> or slack:<id>",
                rule,
            )
            return False
        problem = None
        if kind == "agent" and not _AGENT_NAME.match(name):
            problem = "agent names are 1-63 lower-case letters, digits, '.', '_' or '-'"
        elif kind == "role" and not _is_normal_role(subject):
            problem = "role names are lower-case letters, digits, '.', '_', '-' or ':'"
        elif kind in HUMAN_KINDS:
            # People are compared in one canonical form everywhere authority is checked
            # (outbox/identities.py); a rule must name them in a form that parses.
            try:
                canonical = parse_principal(subject).canonical
            except InvalidIdentity as exc:
                problem = str(exc)
            else:
                if canonical != subject:
                    self.report.add(
                        "warning",
                        "noncanonical-identity",
                        f"subject {subject!r} is read as {canonical!r}; write it that way so the rule reads as it is "
                        "matched",
                        rule,
                    )
        if problem:
            self.report.add("error", "identity-format", f"subject {subject!r}: {problem}", rule)
            return False
        if self.known is not None and kind == "agent" and subject not in self.known.agents:
            self.report.add("warning", "unknown-agent", f"no agent named {name!r} exists in the database", rule)
        return True

    def _check_g(self, rule: PolicyRule) -> None:
        member, role = rule.values
        self._check_subject(rule, member)
        # A person may have several identities (`g, slack:U…, user:…`): the Slack user inherits
        # what the user identity holds. Anything else inherits from roles only.
        human_alias = member.split(":", 1)[0] in HUMAN_KINDS and role.split(":", 1)[0] in HUMAN_KINDS
        if not role.startswith("role:") and not human_alias:
            self.report.add(
                "error",
                "g-parent",
                f"`g, {member}, {role}`: the second field must be a role:<name> (or, for a person's "
                "second identity, the user:/slack: identity it stands for)",
                rule,
            )
        else:
            self._check_subject(rule, role)

    def _check_roles(self) -> None:
        with_rules = {r.values[0] for r in self.p_rules}
        first_reference: dict[str, PolicyRule] = {}
        for rule in [*self.g_rules, *self.p_rules]:
            for name in rule.values[:2] if rule.ptype == "g" else rule.values[:1]:
                if name.startswith("role:"):
                    first_reference.setdefault(name, rule)
        for role, rule in first_reference.items():
            if not (self.graph.closure(role) & with_rules):
                self.report.add(
                    "warning",
                    "unknown-role",
                    f"{role} has no rules, directly or through the roles it inherits (a typo?)",
                    rule,
                )
        members = {r.values[0] for r in self.g_rules}
        for rule in self.p_rules:
            subject = rule.values[0]
            if subject.split(":", 1)[0] in HUMAN_KINDS and subject not in members:
                self.report.add(
                    "warning",
                    "unknown-identity",
                    f"{subject} is given no role by any `g` rule; give people roles (g, {subject}, role:…) "
                    "so that access is reviewed per role",
                    rule,
                )
        if self.known is not None:
            mentioned = set(first_reference)
            for role in sorted(self.known.roles - mentioned):
                self.report.findings.append(
                    Finding("warning", "unused-role", f"agents hold {role}, which no rule mentions: they get nothing")
                )

    # Objects and acts ---------------------------------------------------------------------

    def _check_object(self, rule: PolicyRule) -> None:
        obj, act = rule.values[1], rule.values[2]
        scheme = scheme_of(obj)
        self._check_object_spelling(rule, obj, scheme)
        if self.patterns:
            self._check_object_reachable(rule, obj, act, scheme)

    def _check_object_spelling(self, rule: PolicyRule, obj: str, scheme: str) -> None:
        """Warnings about how the pattern is written: globs misused, regex or template syntax, no scheme."""
        parsed = ObjectPattern.parse(obj)
        body = obj[: -len("/**")] if parsed.tail else obj
        if "**" in body:
            self.report.add(
                "warning",
                "misplaced-globstar",
                f"{obj!r}: `**` spans segments only as a final `/**`; elsewhere it is the same as `*`",
                rule,
            )
        # An IPv6 host is written in brackets (`http:[2001:db8::1]:*/**`); that is not a class.
        unbracketed = re.sub(r"^http:\[[0-9A-Fa-f:.]*\]", "http:", obj)
        if any(hint in unbracketed for hint in _REGEX_HINTS):
            self.report.add(
                "warning",
                "regex-syntax",
                f"{obj!r} looks like a regular expression; objects are globs (`*` within a segment, "
                "final `/**`) and everything else is literal",
                rule,
            )
        if _TEMPLATE.search(obj):
            self.report.add(
                "warning", "template-in-rule", f"{obj!r}: `{{name}}` is literal text in a rule; write `*`", rule
            )
        if "*" in scheme or not literal_prefix(obj):
            self.report.add(
                "warning",
                "overbroad-pattern",
                f"{obj!r} matches objects of every tool; name the tool's scheme (http:, mail:, k8s:, …)",
                rule,
            )

    def _check_object_reachable(self, rule: PolicyRule, obj: str, act: str, scheme: str) -> None:
        """Whether any tool produces an object, and requests an act, the rule can match (an
        error when the tool catalog is complete)."""
        if "*" not in scheme and scheme not in self.schemes:
            severity: Severity = "error" if self.catalog.complete else "warning"
            known = ", ".join(f"{s}:" for s in sorted(self.schemes))
            self.report.add(
                severity,
                "unknown-tool",
                f"no tool produces {scheme}: objects (known: {known}); this rule can never match",
                rule,
            )
            return
        reachable = [(tool, a, p) for tool, a, p in self.patterns if patterns_intersect(obj, p)]
        if not reachable:
            shapes = sorted({p for _tool, _a, p in self.patterns if scheme_of(p) == scheme})
            severity = "error" if self.catalog.complete else "warning"
            self.report.add(
                severity,
                "unknown-object",
                f"{obj!r} matches no object any tool produces (unknown host, subdomain, cluster or "
                f"resource?); {scheme}: objects look like {', '.join(shapes[:6]) or 'nothing'}",
                rule,
            )
            return
        wanted = acts_of(act)
        if wanted is None:
            return
        produced = {a for _tool, a, _p in reachable} | {APPROVE_ACT}
        unknown = sorted(wanted - produced)
        if unknown:
            severity = "error" if self.catalog.complete else "warning"
            self.report.add(
                severity,
                "unknown-act",
                f"act(s) {', '.join(unknown)} never requested on {obj!r} (tools request: "
                f"{', '.join(sorted(produced))}); this part of the rule can never match",
                rule,
            )

    def _check_risky(self, rule: PolicyRule) -> None:
        _subject, obj, act, effect = rule.values
        if effect != "allow":
            return
        if not is_broad(obj):
            return
        wanted = acts_of(act)
        destructive = sorted(self.catalog.destructive if wanted is None else wanted & self.catalog.destructive)
        if wanted is None:
            self.report.add(
                "warning",
                "risky-grant",
                f"allow on every act (`*`) over {obj!r}, including destructive ones; list the acts, "
                "and make destructive ones `approve`",
                rule,
            )
        elif destructive:
            self.report.add(
                "warning",
                "risky-grant",
                f"allow on {', '.join(destructive)} over the wildcard {obj!r}; require a human "
                "(`approve`) or name the objects",
                rule,
            )

    # http: objects in canonical form, one decision per host ------------------------------

    def _canonical_http_object(self, rule: PolicyRule) -> str | None:
        """The rule's object written in the canonical URL form, reporting a rule whose host or
        path is written in another form (it can never match). None when it cannot be rewritten
        (a wildcard host, or a form the canonical URL refuses)."""
        obj = rule.values[1]
        parsed = _HttpPattern.parse(obj)
        if parsed is None or "*" in parsed.host:
            return None
        try:
            host = canonical_host(parsed.host)
        except URLRefused as exc:
            self.report.add(
                "error",
                "noncanonical-object",
                f"{obj!r}: the host {parsed.host!r} is never in an object ({exc}); this rule can never match",
                rule,
            )
            return None
        port = parsed.port
        if port is not None and port.isdigit() and str(int(port)) != port:
            port = str(int(port))
        path = parsed.path
        if not _TEMPLATE.search(path):
            body, tail = (path[: -len("/**")], True) if path.endswith("/**") else (path, False)
            try:
                # `*` stands for some canonical text within a segment; check the whole path with
                # `x` in its place, then normalise the literal pieces between the stars.
                if body or not tail:
                    canonical_path(body.replace("*", "x"))
                body = "*".join(normalise_path_text(piece) for piece in body.split("*")) if body else ""
            except URLRefused as exc:
                self.report.add(
                    "error",
                    "noncanonical-object",
                    f"{obj!r}: the path is never in an object ({exc}); this rule can never match",
                    rule,
                )
                return None
            if not body and not tail:
                body = "/"
            if self.http_config is not None and "*" not in host:
                authority = f"[{host}]" if ":" in host else host
                authority = f"{authority}:{port}" if port is not None else authority
                if self.http_config.limits_for(authority).case_insensitive_paths:
                    body = lowercase_path(body)
            path = body + ("/**" if tail else "")
        fixed = parsed.rebuild(host, port, path)
        if fixed != obj:
            why = (
                "every loopback name is written 127.0.0.1"
                if host == "127.0.0.1" and parsed.host != host
                else "objects use the canonical URL form (policies/README.md, Canonical URLs)"
            )
            self.report.add(
                "error",
                "noncanonical-object",
                f"{obj!r} never matches: {why}; write {fixed!r}",
                rule,
            )
        return fixed

    def _check_http_aliases(self) -> None:
        """Every name of one host gets the same decision: a rule written for an alias (which never
        matches) that would decide otherwise than the rules of the canonical host is reported,
        so the author sees that `localhost` and `127.0.0.1` were given two different answers."""
        rewritten: list[tuple[PolicyRule, str]] = []
        for rule in self.p_rules:
            if scheme_of(rule.values[1]) != "http":
                continue
            parsed = _HttpPattern.parse(rule.values[1])
            if parsed is not None and "*" in parsed.host and rule.values[3] == "allow":
                self.report.add(
                    "warning",
                    "wildcard-host",
                    f"{rule.values[1]!r} allows hosts by wildcard: any DNS name that matches, "
                    "including one that resolves to this machine's loopback or another internal "
                    "address, is granted; name the hosts",
                    rule,
                )
            fixed = self._canonical_http_object(rule)
            rewritten.append((rule, fixed if fixed is not None else rule.values[1]))
        reported: set[tuple[int, int]] = set()
        for rule, fixed in rewritten:
            if fixed == rule.values[1]:
                continue  # written canonically: not an alias
            for other, other_fixed in rewritten:
                if other is rule or rule.values[3] == other.values[3]:
                    continue
                if _HttpPattern.host_of(other.values[1]) == _HttpPattern.host_of(rule.values[1]):
                    continue  # the same name: ordinary overriding, reported as shadowing
                if not (
                    self._subjects_meet(rule.values[0], other.values[0])
                    and _acts_meet(rule.values[2], other.values[2])
                    and patterns_intersect(fixed, other_fixed)
                ):
                    continue
                looser, stricter = (
                    (rule, other) if strictness(rule.values[3]) < strictness(other.values[3]) else (other, rule)
                )
                key = (id(looser), id(stricter))
                if key in reported:
                    continue
                reported.add(key)
                self.report.add(
                    "error",
                    "alias-conflict",
                    f"`{looser.text}` says {looser.values[3]} where {stricter.file}:{stricter.line} "
                    f"`{stricter.text}` says {stricter.values[3]}, for one host under two names "
                    f"({_HttpPattern.host_of(looser.values[1])} and {_HttpPattern.host_of(stricter.values[1])}); "
                    "give every name of a host the same decision, written with the canonical host",
                    looser,
                )

    def _subjects_meet(self, a: str, b: str) -> bool:
        """Some caller can hold both subjects (one inherits the other, or they are the same)."""
        return a in self.graph.closure(b) or b in self.graph.closure(a)

    # Shadowed and redundant rules ---------------------------------------------------------

    def _check_overrides(self) -> None:
        by_subject: dict[str, list[tuple[int, PolicyRule]]] = defaultdict(list)
        for ordinal, rule in enumerate(self.p_rules):
            by_subject[rule.values[0]].append((ordinal, rule))
        for ordinal, rule in enumerate(self.p_rules):
            subject, obj, act, effect = rule.values
            if effect not in EFFECTS:
                continue
            rank = strictness(effect)
            prefix = literal_prefix(obj)
            covering = [
                (o, s)
                for name in self.graph.closure(subject)
                for o, s in by_subject.get(name, ())
                if o != ordinal and prefix.startswith(literal_prefix(s.values[1])) and pattern_covers(s.values[1], obj)
            ]
            stricter = [s for _o, s in covering if strictness(s.values[3]) > rank]
            shadowed = _covered_acts(act, stricter)
            if shadowed is True:
                by = ", ".join(f"{s.file}:{s.line} ({s.values[3]})" for s in stricter if _acts_meet(s.values[2], act))
                self.report.add(
                    "warning",
                    "shadowed",
                    f"this {effect} never takes effect: {by} always matches too and is stricter",
                    rule,
                )
                continue
            if shadowed:
                self.report.add(
                    "warning",
                    "shadowed",
                    f"for act(s) {', '.join(sorted(shadowed))} this {effect} never takes effect: "
                    "a stricter rule always matches too",
                    rule,
                )
            same = [
                (o, s)
                for o, s in covering
                if s.values[3] == effect
                and _acts_cover(s.values[2], act)
                and not (o > ordinal and self._covers(rule, s))
            ]
            if same:
                _o, s = same[0]
                self.report.add(
                    "warning",
                    "redundant",
                    f"already granted by {s.file}:{s.line} `{s.text}`, which covers this rule",
                    rule,
                )

    def _covers(self, outer: PolicyRule, inner: PolicyRule) -> bool:
        return (
            outer.values[0] in self.graph.closure(inner.values[0])
            and _acts_cover(outer.values[2], inner.values[2])
            and pattern_covers(outer.values[1], inner.values[1])
        )


@dataclass(frozen=True, slots=True)
class _HttpPattern:
    """An `http:` rule object split into host, port and path (each may hold `*`)."""

    host: str
    port: str | None
    path: str  # "" or starting with "/", with any final "/**"

    @classmethod
    def parse(cls, obj: str) -> _HttpPattern | None:
        if not obj.startswith("http:"):
            return None
        rest = obj[len("http:") :]
        slash = rest.find("/")
        authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
        if authority.startswith("["):
            end = authority.find("]")
            if end < 0:
                return cls(authority, None, path)
            host, after = authority[: end + 1], authority[end + 1 :]
            return cls(host, after[1:] if after.startswith(":") else None, path)
        host, colon, port = authority.partition(":")
        return cls(host, port if colon else None, path)

    @classmethod
    def host_of(cls, obj: str) -> str:
        parsed = cls.parse(obj)
        return parsed.host if parsed is not None else obj

    def rebuild(self, host: str, port: str | None, path: str) -> str:
        host = f"[{host}]" if ":" in host else host
        return f"http:{host}{f':{port}' if port is not None else ''}{path}"


def is_broad(obj: str) -> bool:
    """A wildcard that reaches far: any suffix (`/**`), any whole segment (`/*`), or any host,
    domain or cluster (a `*` in the first segment)."""
    parsed = ObjectPattern.parse(obj)
    return parsed.tail or "*" in parsed.segments[0] or any(s.strip("*") == "" for s in parsed.segments)


def _is_normal_role(subject: str) -> bool:
    try:
        return normalise_role(subject) == subject
    except AgentError:
        return False


def _acts_cover(outer: str, inner: str) -> bool:
    outer_acts, inner_acts = acts_of(outer), acts_of(inner)
    if outer_acts is None:
        return True
    return inner_acts is not None and inner_acts <= outer_acts


def _covered_acts(act: str, stricter: Iterable[PolicyRule]) -> bool | set[str]:
    """True when every act of the rule is overridden; else the acts that are."""
    stricter = list(stricter)
    if any(acts_of(s.values[2]) is None for s in stricter):
        return True
    wanted = acts_of(act)
    covered: set[str] = set()
    for s in stricter:
        covered |= acts_of(s.values[2]) or set()
    if wanted is None:
        return set()
    if wanted <= covered:
        return True
    return set(wanted & covered)


def _acts_meet(a: str, b: str) -> bool:
    first, second = acts_of(a), acts_of(b)
    return first is None or second is None or bool(first & second)
