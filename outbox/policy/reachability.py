"""Which tools an agent may call at all under a policy: what `GET /v1/tools` and MCP `tools/list`
show it.

A tool is callable when policy can answer `allow` or `approve` for some target the tool can
produce (its `target_patterns()`, `DescribesTargets`). The answer comes from the rules, not from
probing objects: for each target shape, a rule of the agent (its principal, its roles, and every
role they reach through `g` rules, as `PolicySnapshot.decide` resolves them) whose act matches
and whose object pattern overlaps the shape's is a way in, unless a `deny` rule of the agent
covers that whole overlap (deny beats approve beats allow).

Every doubt resolves towards showing the tool, because the two mistakes are not alike: a tool
shown that then denies a call costs the agent one denied call, whose answer names the rule and
what to do instead; a tool hidden that the agent may call is a capability it never learns of.
Listing is not enforcement (policy still decides every call), so showing too much opens nothing.
Hence:

- a deny removes a way in only when a single deny rule covers the allowing rule's object or the
  whole target shape; several denies that only together cover it leave the tool shown;
- a tool without `target_patterns()` cannot be analysed and is shown;
- under a casbin model other than the standard one (`engine.STANDARD_MODEL`), whose matcher this
  reasoning cannot follow, every tool is shown;
- a tool's blast-radius bound or an approval gate only sends calls to a human
  (`effective.py`): they never make a tool uncallable.

Results are cached per (policy version, the agent's resolved names, the tools' target shapes):
the key determines the answer, so a reload or a changed tool set is a new entry, never a stale
one. Uncached it costs about a millisecond for the shipped policy and tools; a listing is asked
once per `tools/list`, and MCP clients ask often.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from outbox.policy.engine import PolicyRule, PolicySnapshot, canonical_values
from outbox.policy.matching import Subject, act_match, pattern_covers, patterns_intersect, template_to_pattern
from outbox.toolkit.base import DescribesTargets, Tool

_CACHE_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class ToolReachability:
    """Whether an agent may call a tool at all, and why not when it may not."""

    tool: str
    callable: bool
    # Why the agent may not call it (None when it may), in words an agent can act on.
    reason: str | None = None
    # False when the answer is "shown" only because it could not be worked out (no target
    # patterns, or a non-standard casbin model).
    analysed: bool = True


@dataclass(frozen=True, slots=True)
class _Rule:
    object: str
    act: str
    effect: str
    source: PolicyRule


# A target shape as the analysis sees it: (object pattern, act).
_Shape = tuple[str, str]


def callable_tools(snapshot: PolicySnapshot, subject: Subject, tools: Mapping[str, Tool]) -> list[str]:
    """The names of the tools `subject` may call at all, in name order."""
    return [name for name, reach in tool_reachability(snapshot, subject, tools).items() if reach.callable]


def tool_reachability(
    snapshot: PolicySnapshot, subject: Subject, tools: Mapping[str, Tool]
) -> dict[str, ToolReachability]:
    """Every tool, in name order, with whether `subject` may call it at all and why not."""
    names = snapshot.role_graph.closure_of(subject.names)
    shapes = tuple((name, _shapes_of(tools[name])) for name in sorted(tools))
    key = (snapshot.version, snapshot.indexed, subject.principal, names, shapes)
    cached = _cache.get(key)
    if cached is None:
        cached = _analyse(snapshot, subject, names, shapes)
        _cache.put(key, cached)
    return {reach.tool: reach for reach in cached}


def _shapes_of(tool: Tool) -> tuple[_Shape, ...] | None:
    if not isinstance(tool, DescribesTargets):
        return None
    return tuple(sorted({(template_to_pattern(target.object), target.act) for target in tool.target_patterns()}))


def _analyse(
    snapshot: PolicySnapshot,
    subject: Subject,
    names: frozenset[str],
    shapes: tuple[tuple[str, tuple[_Shape, ...] | None], ...],
) -> tuple[ToolReachability, ...]:
    if not snapshot.indexed:
        return tuple(ToolReachability(name, callable=True, analysed=False) for name, _ in shapes)
    rules = _rules_of(snapshot, names)
    results: list[ToolReachability] = []
    for name, tool_shapes in shapes:
        if tool_shapes is None:
            results.append(ToolReachability(name, callable=True, analysed=False))
            continue
        denying: dict[PolicyRule, None] = {}  # the deny rules in the way, each once, in order
        reachable = False
        for shape in tool_shapes:
            reachable, blockers = _shape_reachable(shape, rules)
            if reachable:
                break
            denying.update(dict.fromkeys(blockers))
        if reachable:
            results.append(ToolReachability(name, callable=True))
        else:
            results.append(ToolReachability(name, callable=False, reason=_why_not(subject, names, list(denying))))
    return tuple(results)


def _rules_of(snapshot: PolicySnapshot, names: frozenset[str]) -> tuple[_Rule, ...]:
    """The `p` rules whose subject is one of `names`, with subjects as the engine compares them."""
    rules: list[_Rule] = []
    for rule in snapshot.rules:
        if rule.ptype != "p":
            continue
        subject, obj, act, effect = canonical_values(rule)
        if subject in names:
            rules.append(_Rule(obj, act, effect, rule))
    return tuple(rules)


def _shape_reachable(shape: _Shape, rules: tuple[_Rule, ...]) -> tuple[bool, list[PolicyRule]]:
    """Whether some object of `shape` can get allow or approve; else the deny rules in the way."""
    pattern, act = shape
    relevant = [rule for rule in rules if act_match(act, rule.act) and patterns_intersect(pattern, rule.object)]
    denies = [rule for rule in relevant if rule.effect == "deny"]
    blockers: list[PolicyRule] = []
    for rule in relevant:
        if rule.effect == "deny":
            continue
        # The overlap of the shape and this rule lies inside both, so a deny covering either one
        # covers the overlap; anything less certain counts as reachable (see the module's why).
        covering = next(
            (
                deny
                for deny in denies
                if pattern_covers(deny.object, rule.object) or pattern_covers(deny.object, pattern)
            ),
            None,
        )
        if covering is None:
            return True, []
        blockers.append(covering.source)
    return False, blockers


_NAMED_DENIES = 3


def _why_not(subject: Subject, names: frozenset[str], denying: list[PolicyRule]) -> str:
    if denying:
        named = ", ".join(f"`{rule.text}` ({rule.file}:{rule.line})" for rule in denying[:_NAMED_DENIES])
        more = len(denying) - _NAMED_DENIES
        rules = "rule" if len(denying) == 1 else "rules"
        return f"every target this tool can produce is denied for you, by {rules} {named}" + (
            f" and {more} more" if more > 0 else ""
        )
    roles = sorted(names - {subject.principal})
    whom = (
        f"you ({subject.principal}) or your roles ({', '.join(roles)})"
        if roles
        else f"you ({subject.principal}), who hold no roles"
    )
    return f"no rule allows it, or asks a human to approve it, for {whom}"


class _ResultCache:
    """A bounded map, oldest entry out first; a lock keeps concurrent requests from tearing it."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[object, tuple[ToolReachability, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: object) -> tuple[ToolReachability, ...] | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: object, value: tuple[ToolReachability, ...]) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


_cache = _ResultCache(_CACHE_ENTRIES)
