"""Argv and target templates: where validated values go, and nowhere else.

An argv element is either literal text or one placeholder, optionally after a literal prefix
(`{name}`, `--replicas={replicas}`, `-chdir=/terraform/{stack}`). A placeholder yields exactly
one argv element; an array parameter yields one element per item. Nothing is split, joined,
quoted or expanded: the list goes to execve as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from outbox.commands.parameters import ArgumentValue
from outbox.toolkit.base import Target

PARAMETER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_ARGV_PLACEHOLDER = re.compile(r"^(?P<prefix>[^{}]*)\{(?P<param>[a-z][a-z0-9_]*)\}$")
_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class ArgvElement:
    """Literal `text`, or `text` followed by the value of `param`."""

    text: str
    param: str | None = None


def parse_argv_element(element: str) -> ArgvElement:
    """Parse one template element; ValueError for anything but literal or prefix+placeholder."""
    if (match := _ARGV_PLACEHOLDER.fullmatch(element)) is not None:
        return ArgvElement(match["prefix"], match["param"])
    if "{" in element or "}" in element:
        raise ValueError(
            f"{element!r}: a placeholder must be a whole element or end one after a literal"
            " prefix ({name} or --flag={name}); braces are not allowed otherwise"
        )
    return ArgvElement(element)


def object_placeholders(template: str) -> list[str]:
    """Parameter names in a target object template; ValueError on stray braces."""
    leftover = _PLACEHOLDER.sub("", template)
    if "{" in leftover or "}" in leftover:
        raise ValueError(f"{template!r}: braces must enclose a parameter name, as in {{name}}")
    return _PLACEHOLDER.findall(template)


def render_argv(template: Sequence[str], values: Mapping[str, ArgumentValue]) -> list[str]:
    argv: list[str] = []
    for element in template:
        parsed = parse_argv_element(element)
        if parsed.param is None:
            argv.append(parsed.text)
            continue
        value = values[parsed.param]
        items = value if isinstance(value, tuple) else (value,)
        argv.extend(parsed.text + str(item) for item in items)
    return argv


def render_targets(templates: Sequence[tuple[str, str]], values: Mapping[str, ArgumentValue]) -> list[Target]:
    """One target per (template, array element); scalars are substituted into each."""
    targets: list[Target] = []
    for object_template, act in templates:
        names = object_placeholders(object_template)
        arrays = [name for name in names if isinstance(values[name], tuple)]
        if not arrays:
            targets.append(Target(_substitute(object_template, values, {}), act))
            continue
        (array,) = arrays  # the definition allows at most one array per template
        items = values[array]
        assert isinstance(items, tuple)
        targets.extend(Target(_substitute(object_template, values, {array: item}), act) for item in items)
    return targets


def _substitute(template: str, values: Mapping[str, ArgumentValue], overrides: Mapping[str, str | int]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match[1]
        return str(overrides[name] if name in overrides else values[name])

    return _PLACEHOLDER.sub(replace, template)
