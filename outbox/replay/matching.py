"""Which recorded call answers a new one: the match rule of the replay twin.

A call matches a recorded one when the tool and the canonical arguments (`outbox.canonical`)
as the agent sent them (read from the recorded request) are the same, and the person it acts
for (`on_behalf_of`) too, unless named fields are ignored: dotted paths into the call
(`args.send_at`, `args.headers.Date`, `on_behalf_of`). The idempotency key is never part
of the match: a new model makes new keys.

When several recorded calls match, they answer in recorded order, each once, and then the last
of them again: a model that repeats a call the original model made three times gets the three
recorded answers, and any further repetition the third.

A call that matches nothing is a divergence; the nearest recorded call is the one with the same
tool and the fewest differing fields (any recorded call when none has the tool), the earliest
recorded on a tie.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from outbox.canonical import canonical_json
from outbox.policytools.replay import received_args
from outbox.recordings.reader import RecordedAction

# A differing tool outweighs any number of differing arguments.
_TOOL_WEIGHT = 1_000_000


class IgnoreFieldError(ValueError):
    """An --ignore path that names no field a call has."""


@dataclass(frozen=True, slots=True)
class MatchRule:
    """`exact`, or with `ignore`: the dotted paths left out of the comparison."""

    ignore: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def of(cls, fields: Sequence[str]) -> MatchRule:
        paths = []
        for name in fields:
            parts = tuple(name.split("."))
            if parts[0] not in ("args", "on_behalf_of") or "" in parts or (parts[0] == "args" and len(parts) < 2):
                raise IgnoreFieldError(
                    f"--ignore {name!r}: name a field of the arguments (args.send_at, args.headers.Date) "
                    "or on_behalf_of; the tool is always matched"
                )
            paths.append(parts)
        return cls(tuple(paths))

    @property
    def mode(self) -> str:
        return "ignore" if self.ignore else "exact"

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "ignore": [".".join(path) for path in self.ignore]}

    def comparable(self, call: Call) -> dict[str, Any]:
        """The call with the ignored fields left out."""
        shape: dict[str, Any] = {"args": copy.deepcopy(call.args), "on_behalf_of": call.on_behalf_of}
        for path in self.ignore:
            _drop(shape, path)
        return shape


def _drop(shape: dict[str, Any], path: tuple[str, ...]) -> None:
    node: Any = shape
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(path[-1], None)


@dataclass(frozen=True, slots=True)
class Call:
    """A tool call as the twin compares it: the tool's outbox name, its arguments, for whom."""

    tool: str
    args: Mapping[str, Any]
    on_behalf_of: str | None

    @classmethod
    def of(cls, action: RecordedAction) -> Call:
        """A recorded call with its arguments as its agent sent them (the tool's normalised
        arguments leave out defaults a model may well spell out): what a new model sends too."""
        return cls(action.tool, received_args(action), action.on_behalf_of)


@dataclass(frozen=True, slots=True)
class Nearest:
    """The recorded call closest to one that matched nothing, and the fields that differ."""

    action_id: str
    tool: str
    differing: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        return {"action_id": self.action_id, "tool": self.tool, "differing": list(self.differing)}


@dataclass
class Matcher:
    """The recorded calls a twin answers from, with how often each group has answered."""

    actions: Sequence[RecordedAction]
    rule: MatchRule = field(default_factory=MatchRule)
    _groups: dict[str, list[RecordedAction]] = field(default_factory=dict, init=False)
    _answered: dict[str, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for action in self.actions:
            self._groups.setdefault(self._key(Call.of(action)), []).append(action)

    def _key(self, call: Call) -> str:
        return canonical_json({"tool": call.tool, **self.rule.comparable(call)})

    def match(self, call: Call) -> RecordedAction | None:
        """The recorded call that answers `call` (and counts it as answered), or None."""
        key = self._key(call)
        group = self._groups.get(key)
        if not group:
            return None
        turn = self._answered.get(key, 0)
        self._answered[key] = turn + 1
        return group[min(turn, len(group) - 1)]

    def nearest(self, call: Call) -> Nearest | None:
        best: tuple[int, RecordedAction, tuple[str, ...]] | None = None
        compared = self.rule.comparable(call)
        for action in self.actions:
            differing = differing_fields(self.rule.comparable(Call.of(action)), compared)
            if action.tool != call.tool:
                differing = ("tool", *differing)
            score = len(differing) + (_TOOL_WEIGHT if action.tool != call.tool else 0)
            if best is None or score < best[0]:
                best = (score, action, differing)
        if best is None:
            return None
        return Nearest(best[1].id, best[1].tool, best[2])


def differing_fields(recorded: Any, given: Any, path: str = "") -> tuple[str, ...]:
    """The dotted paths where two JSON values differ: objects field by field, arrays of the same
    length item by item, anything else as a whole."""
    if isinstance(recorded, dict) and isinstance(given, dict):
        found: list[str] = []
        for name in sorted(set(recorded) | set(given)):
            where = f"{path}.{name}" if path else name
            if name not in recorded or name not in given:
                found.append(where)
            else:
                found.extend(differing_fields(recorded[name], given[name], where))
        return tuple(found)
    if isinstance(recorded, list) and isinstance(given, list) and len(recorded) == len(given):
        return tuple(
            item
            for n, (a, b) in enumerate(zip(recorded, given, strict=True))
            for item in differing_fields(a, b, f"{path}[{n}]")
        )
    return () if canonical_json(recorded) == canonical_json(given) else (path or "call",)
