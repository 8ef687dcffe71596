"""The matching functions policy rules use, anchored by construction.

casbin's built-ins have traps for this use: `keyMatch` treats `*` as "any suffix, across `/`",
and `regexMatch` is unanchored (`send_email` matches `send_email_all`). Our functions match the
whole string; `*` stays within one path segment, `**` (only as the last segment) spans the rest.
Anything else is compared literally.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache


@lru_cache(maxsize=65536)
def object_pattern(pattern: str) -> re.Pattern[str]:
    """The compiled, anchored form of an object pattern (use with `fullmatch`)."""
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("/**", i) and i + 3 == len(pattern):
            parts.append("(?:/.*)?")
            i += 3
        elif pattern[i] == "*":
            parts.append("[^/]*")
            i += 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts), re.DOTALL)


def object_match(request_object: str, rule_object: str) -> bool:
    """`mail:agents.example.com/*@example.org` style patterns, matched in full."""
    if "*" not in rule_object:
        return request_object == rule_object
    return object_pattern(rule_object).fullmatch(request_object) is not None


def act_match(request_act: str, rule_act: str) -> bool:
    """An act rule is `*`, one act, or a `|`-separated list of acts (`get|head`)."""
    if rule_act == "*":
        return True
    return request_act in rule_act.split("|")


@dataclass(frozen=True, slots=True)
class Subject:
    """Who asks: the principal (`agent:crm-bot`) and the roles it holds outside the policy files.

    Roles given when an agent is created live in the database; `g` rules in the policy files add
    role hierarchies and human identities. Both count.
    """

    principal: str
    roles: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.principal, *self.roles)

    def __str__(self) -> str:
        return self.principal


# --- Static analysis of object patterns -------------------------------------------------------
#
# `policy check` and `policy diff` reason about patterns, not only concrete objects: is one rule's
# object covered by another's, can a rule's object ever be produced by a tool, what does a rule
# look like as a concrete object. Patterns are a sequence of `/`-separated segments, each a glob
# whose `*` stays inside the segment, optionally followed by a final `/**` (any suffix that starts
# with `/`, or nothing). Tool target templates use `{param}` for one agent-filled segment.

_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
TAIL = "/**"


@dataclass(frozen=True, slots=True)
class ObjectPattern:
    """A parsed object pattern: literal-or-glob segments, and whether a final `/**` follows."""

    segments: tuple[str, ...]
    tail: bool

    @classmethod
    def parse(cls, pattern: str) -> ObjectPattern:
        if pattern.endswith(TAIL):
            return cls(tuple(pattern[: -len(TAIL)].split("/")), True)
        return cls(tuple(pattern.split("/")), False)

    @property
    def is_literal(self) -> bool:
        return not self.tail and not any("*" in s for s in self.segments)


def template_to_pattern(template: str) -> str:
    """A tool's target template (`k8s:{cluster}/namespace/{name}`) as a rule pattern (`*` each)."""
    return _PLACEHOLDER.sub("*", template)


def literal_prefix(pattern: str) -> str:
    """The text every matching object starts with: up to the first `*` (the `/` of a `/**` is
    optional, so it is not part of the prefix)."""
    body = pattern[: -len(TAIL)] if pattern.endswith(TAIL) else pattern
    star = body.find("*")
    return body if star < 0 else body[:star]


def _glob_covers(outer: str, inner: str) -> bool:
    """Every string `inner` matches, `outer` matches too (`*` never crosses `/`).

    `outer` must match `inner`'s text, where a `*` of `inner` can only be absorbed by a `*` of
    `outer`. Sound (never claims a cover that does not hold); it may miss exotic covers, which
    only means a shadowed rule goes unreported.
    """

    @cache
    def covers(i: int, j: int) -> bool:
        if i == len(outer):
            return j == len(inner)
        if outer[i] == "*":
            return covers(i + 1, j) or (j < len(inner) and covers(i, j + 1))
        return j < len(inner) and inner[j] != "*" and inner[j] == outer[i] and covers(i + 1, j + 1)

    return covers(0, 0)


def _globs_intersect(a: str, b: str) -> bool:
    """Some string (without `/`) matches both globs."""

    @cache
    def meet(i: int, j: int) -> bool:
        if i == len(a) and j == len(b):
            return True
        if i < len(a) and a[i] == "*" and (meet(i + 1, j) or (j < len(b) and meet(i, j + 1))):
            return True
        if j < len(b) and b[j] == "*" and (meet(i, j + 1) or (i < len(a) and meet(i + 1, j))):
            return True
        return i < len(a) and j < len(b) and a[i] != "*" and a[i] == b[j] and meet(i + 1, j + 1)

    return meet(0, 0)


def pattern_covers(outer: str, inner: str) -> bool:
    """Every object `inner` matches is matched by `outer` (both patterns, or `inner` concrete)."""
    o, i = ObjectPattern.parse(outer), ObjectPattern.parse(inner)
    if o.tail:
        if len(i.segments) < len(o.segments):
            return False
    elif i.tail or len(i.segments) != len(o.segments):
        return False
    return all(_glob_covers(a, b) for a, b in zip(o.segments, i.segments, strict=False))


def patterns_intersect(a: str, b: str) -> bool:
    """Some object matches both patterns."""
    p, q = ObjectPattern.parse(a), ObjectPattern.parse(b)
    if not p.tail and not q.tail and len(p.segments) != len(q.segments):
        return False
    if p.tail and not q.tail and len(q.segments) < len(p.segments):
        return False
    if q.tail and not p.tail and len(p.segments) < len(q.segments):
        return False
    return all(_globs_intersect(x, y) for x, y in zip(p.segments, q.segments, strict=False))


def acts_of(rule_act: str) -> frozenset[str] | None:
    """The acts a rule's act field names; None for `*` (every act)."""
    return None if rule_act == "*" else frozenset(rule_act.split("|"))


def example_objects(pattern: str, placeholder: str = "{any}") -> list[str]:
    """A concrete object the pattern matches, for diffing two policies: each run of `*` becomes
    `placeholder`, a final `/**` becomes `/placeholder`. A template's `{param}` stays as it is: it
    contains no `/` and reads better than a placeholder."""
    parsed = ObjectPattern.parse(pattern)
    body = "/".join(re.sub(r"\*+", placeholder, seg) for seg in parsed.segments)
    return [f"{body}/{placeholder}"] if parsed.tail else [body]
