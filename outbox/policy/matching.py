"""The matching functions policy rules use, anchored by construction.

casbin's built-ins have traps for this use: `keyMatch` treats `*` as "any suffix, across `/`",
and `regexMatch` is unanchored (`send_email` matches `send_email_all`). Our functions match the
whole string; `*` stays within one path segment, `**` (only as the last segment) spans the rest.
Anything else is compared literally.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache


@lru_cache(maxsize=65536)
def _object_pattern(pattern: str) -> re.Pattern[str]:
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
    return _object_pattern(rule_object).fullmatch(request_object) is not None


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
