"""Where two policy versions can decide a call differently, found once per pair of versions.

A shadow policy (docs/shadow-policy.md) is usually the live one with a few lines changed. A call
that none of those lines can match is decided by the same rules on both sides, so the shadow's
outcome is the live one, and deciding it a second time would cost a full decision for nothing.
`PolicyDelta` indexes only the `p` rules that one side has and the other has not; a call whose
subject and targets match none of them is decided alike. The shortcut holds only when everything
else is equal, and is off otherwise (every call is then decided in full):

- the same model (the standard, indexed one), the same `g` role links;
- the rules both sides have, in the same relative order (the first rule of the strictest effect
  decides, and is the one reported);
- the same tool definitions and configuration (every policy file but the rule files and
  `tests/`), so targets, blast-radius bounds and approval gates are the same too.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from outbox.policy.engine import (
    PolicySnapshot,
    canonical_values,
    read_policy_files,
    rule_files_of,
    version_of,
)
from outbox.policy.index import IndexedRule, RuleIndex
from outbox.policy.matching import Subject
from outbox.toolkit.base import Target

_RANK = {"allow": 0, "approve": 1, "deny": 2}
# Distinct callers (agent and roles) whose role closure is kept; past it, computed each time.
_MAX_CLOSURES = 4096


@dataclass(frozen=True)
class PolicyDelta:
    live_version: str
    other_version: str
    # Why the shortcut is off, or None when calls matching no changed rule are decided alike.
    incomparable: str | None
    changed: RuleIndex | None
    live: PolicySnapshot
    other: PolicySnapshot
    # The subjects the changed rules name: a caller holding none of them is decided alike.
    subjects: frozenset[str] = frozenset()
    # Subject names -> the names they hold through `g` (the same on both sides), as asked.
    _closures: dict[tuple[str, ...], frozenset[str]] = field(default_factory=dict, repr=False)

    def may_differ(self, subject: Subject, targets: Sequence[Target]) -> bool:
        """False only when both versions certainly decide this call alike."""
        if self.incomparable is not None or self.changed is None:
            return True
        names = self._closures.get(subject.names)
        if names is None:
            names = self.live.role_graph.closure_of(subject.names)
            if len(self._closures) < _MAX_CLOSURES:
                self._closures[subject.names] = names
        if self.subjects.isdisjoint(names):
            return False
        return any(self.changed.best_match(names, t.object, t.act) is not None for t in targets)


def compare(live: PolicySnapshot, other: PolicySnapshot) -> PolicyDelta:
    """The delta between two loaded versions (reads both directories' files once)."""
    incomparable = _incomparable(live, other)
    changed = None
    subjects: frozenset[str] = frozenset()
    if incomparable is None:
        live_keys, other_keys = _p_keys(live), _p_keys(other)
        common = set(live_keys) & set(other_keys)
        if [k for k in live_keys if k in common] != [k for k in other_keys if k in common]:
            incomparable = "the rules both versions have are in another order"
        else:
            only = [k for k in live_keys if k not in common] + [k for k in other_keys if k not in common]
            changed = RuleIndex([IndexedRule(n, k[0], k[1], k[2], _RANK[k[3]]) for n, k in enumerate(only)])
            subjects = frozenset(k[0] for k in only)
    return PolicyDelta(live.version, other.version, incomparable, changed, live, other, subjects)


def _incomparable(live: PolicySnapshot, other: PolicySnapshot) -> str | None:
    if live.index is None or other.index is None:
        return "a version does not use the standard model"
    live_files, other_files = _configuration(live), _configuration(other)
    if live_files is None or other_files is None:
        return "a version's files changed on disk since it was loaded"
    if live_files != other_files:
        differing = sorted({name for name, _ in set(live_files.items()) ^ set(other_files.items())})
        return f"the versions' configuration differs ({', '.join(differing[:3])})"
    if _g_links(live) != _g_links(other):
        return "the role links (g rules) differ"
    return None


def _configuration(snapshot: PolicySnapshot) -> dict[str, bytes] | None:
    """Every file but the rules and the policy tests, or None when the directory no longer holds
    the version that was loaded (a reload is on its way)."""
    files = read_policy_files(snapshot.directory)
    if version_of(files) != snapshot.version:
        return None
    rules = set(rule_files_of(files))
    return {name: data for name, data in files.items() if name not in rules and not name.startswith("tests/")}


def _p_keys(snapshot: PolicySnapshot) -> list[tuple[str, ...]]:
    """The `p` rules as the engine keys them (subject canonical), in its order."""
    return [canonical_values(rule) for rule in snapshot.ordered_p_rules]


def _g_links(snapshot: PolicySnapshot) -> frozenset[tuple[str, ...]]:
    return frozenset(canonical_values(rule) for rule in snapshot.rules if rule.ptype == "g")


_cache: dict[tuple[int, int], PolicyDelta] = {}
_cache_lock = threading.Lock()


def delta_between(live: PolicySnapshot, other: PolicySnapshot) -> PolicyDelta:
    """`compare`, once per pair of loaded snapshots (a reload of either makes a new pair)."""
    key = (id(live), id(other))
    cached = _cache.get(key)
    if cached is not None and cached.live is live and cached.other is other:
        return cached
    delta = compare(live, other)
    with _cache_lock:
        if len(_cache) > 16:
            _cache.clear()
        _cache[key] = delta
    return delta
