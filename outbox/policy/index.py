"""Decisions that do not scan every rule.

casbin evaluates its matcher against every `p` rule for every request, so a decision costs time
proportional to the size of the policy. With thousands of rules (many agents, many hosts and
clusters) that is milliseconds per target. The index narrows a request to the few rules that can
match it, then evaluates those with the very functions the casbin model calls
(`objectMatch`, `actMatch`, and the role closure behind `subjectMatch`):

1. by subject: only rules whose subject is one of the caller's names or roles (closed over `g`);
2. by act: the request's act, plus rules whose act is `*`;
3. by object: rules without `*` by exact object; others by their literal prefix (the text before
   the first `*`), looked up once per distinct prefix length.

The index is used only when the model is the standard one (see `engine.STANDARD_MODEL`);
any other model falls back to casbin's scan. `tests/policy/test_index_equivalence.py` checks the
two agree, rule for rule, on random policies.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from outbox.policy.matching import literal_prefix, object_pattern

# casbin's default role manager follows at most this many `g` levels (`max_hierarchy_level`).
CASBIN_MAX_HIERARCHY = 10


class RoleGraph:
    """`g` links (member → role) and the closure casbin's `has_link` computes over them."""

    def __init__(self, links: Iterable[tuple[str, str]], max_hierarchy: int = CASBIN_MAX_HIERARCHY) -> None:
        parents: dict[str, set[str]] = defaultdict(set)
        for member, role in links:
            parents[member].add(role)
        self._parents = {name: frozenset(roles) for name, roles in parents.items()}
        self._max = max_hierarchy
        self._closures: dict[str, frozenset[str]] = {}
        for name in self.names:  # computed at load, not during a decision
            self.closure(name)

    def closure(self, name: str) -> frozenset[str]:
        """`name` and every role it reaches within casbin's hierarchy limit."""
        cached = self._closures.get(name)
        if cached is not None:
            return cached
        seen = {name}
        frontier = {name}
        # casbin's `_has_link` checks a level while `level > 0`, starting at the limit: names up
        # to `max - 1` links away are reached.
        for _ in range(self._max - 1):
            frontier = {r for n in frontier for r in self._parents.get(n, ())} - seen
            if not frontier:
                break
            seen |= frontier
        result = frozenset(seen)
        # A dict assignment is atomic; concurrent callers at worst compute the same value twice.
        self._closures[name] = result
        return result

    def closure_of(self, names: Iterable[str]) -> frozenset[str]:
        result: set[str] = set()
        for name in names:
            result |= self.closure(name)
        return frozenset(result)

    @property
    def names(self) -> frozenset[str]:
        """Every name that appears in a `g` link, as member or as role."""
        return frozenset(self._parents) | frozenset(r for roles in self._parents.values() for r in roles)


@dataclass(frozen=True, slots=True)
class IndexedRule:
    """One `p` rule as the index holds it. `rank` orders effects: higher is stricter."""

    ordinal: int
    subject: str
    object: str
    act: str
    rank: int

    @property
    def order(self) -> tuple[int, int]:
        """Lower is better: the strictest effect, then the first rule in file order."""
        return (-self.rank, self.ordinal)


class _ObjectTable:
    def __init__(self, rules: Sequence[IndexedRule]) -> None:
        exact: dict[str, list[IndexedRule]] = defaultdict(list)
        prefixed: dict[str, list[IndexedRule]] = defaultdict(list)
        for rule in rules:
            if "*" in rule.object:
                prefixed[literal_prefix(rule.object)].append(rule)
            else:
                exact[rule.object].append(rule)
        # Best first within each list, so the first match found in a list is that list's answer.
        # Patterns are compiled here, at load, so that no decision pays for a compilation.
        self.exact = {key: min(group, key=lambda r: r.order) for key, group in exact.items()}
        self.prefixed: dict[str, list[tuple[IndexedRule, Callable[[str], re.Match[str] | None]]]] = {
            key: [(rule, object_pattern(rule.object).fullmatch) for rule in sorted(group, key=lambda r: r.order)]
            for key, group in prefixed.items()
        }
        self.lengths = tuple(sorted({len(key) for key in self.prefixed}))

    def best(self, obj: str, best: IndexedRule | None) -> IndexedRule | None:
        hit = self.exact.get(obj)
        if hit is not None and (best is None or hit.order < best.order):
            best = hit
        size = len(obj)
        for length in self.lengths:
            if length > size:
                break
            group = self.prefixed.get(obj[:length])
            if group is None:
                continue
            for rule, fullmatch in group:
                if best is not None and rule.order >= best.order:
                    break
                if fullmatch(obj) is not None:
                    best = rule
                    break
        return best


# The bucket key for rules whose act is `*`; distinct from a literal act spelled "*".
_ANY_ACT: None = None


class RuleIndex:
    """Candidate rules per subject, act and object prefix."""

    def __init__(self, rules: Sequence[IndexedRule]) -> None:
        grouped: dict[str, dict[str | None, list[IndexedRule]]] = defaultdict(lambda: defaultdict(list))
        for rule in rules:
            by_act = grouped[rule.subject]
            if rule.act == "*":
                by_act[_ANY_ACT].append(rule)
            else:
                for act in set(rule.act.split("|")):
                    by_act[act].append(rule)
        self._tables = {
            subject: {act: _ObjectTable(group) for act, group in by_act.items()} for subject, by_act in grouped.items()
        }
        self.size = len(rules)

    def best_match(self, names: Iterable[str], obj: str, act: str) -> IndexedRule | None:
        """The rule casbin's probe order would report: strictest effect, then first in order."""
        best: IndexedRule | None = None
        for name in names:
            by_act = self._tables.get(name)
            if by_act is None:
                continue
            for key in (act, _ANY_ACT):
                table = by_act.get(key)
                if table is not None:
                    best = table.best(obj, best)
        return best
