"""Typed parameters of a command tool, and the checks every agent-supplied value must pass.

A value becomes exactly one argv element, so a shell never sees it; these checks close the
remaining doors. A leading `-` would be read as an option (`--all-namespaces`), a glob character
could select by pattern in tools that expand them, and a control character could smuggle a
second line into a program that reads one. The definition's anchored pattern (or enum) is the
final authority on what a value may look like; shipped patterns are strict.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

# What one parameter holds once validated.
ArgumentValue = str | int | tuple[str | int, ...]

WILDCARD_CHARACTERS = frozenset("*?[")
_SHELL_SYNTAX = frozenset(";|&$`()<>\\'\"")
_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def check_anchored_pattern(pattern: str) -> str:
    """Accept only `^...$` patterns whose anchors bind the whole expression."""
    body_end = pattern[:-1]
    dollar_escaped = (len(body_end) - len(body_end.rstrip("\\"))) % 2 == 1
    if not pattern.startswith("^") or not pattern.endswith("$") or dollar_escaped:
        raise ValueError(f"pattern {pattern!r} must be anchored: start with ^ and end with $")
    try:
        re.compile(pattern, re.ASCII)
    except re.error as error:
        raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {error}") from None
    if _has_top_level_alternation(pattern[1:-1]):
        raise ValueError(f"pattern {pattern!r}: a top-level | escapes the anchors; group it, as in ^(a|b)$")
    return pattern


def _has_top_level_alternation(body: str) -> bool:
    depth, class_start, escaped = 0, -1, False
    for index, char in enumerate(body):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif class_start >= 0:
            # `]` right after `[` or `[^` is a literal member, not the end of the class.
            first_member = class_start + (2 if body[class_start + 1 : class_start + 2] == "^" else 1)
            if char == "]" and index > first_member:
                class_start = -1
        elif char == "[":
            class_start = index
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return True
    return False


def _control_character(value: str) -> str | None:
    for char in value:
        if unicodedata.category(char) in _CONTROL_CATEGORIES:
            return char
    return None


class _Parameter(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Required on top-level parameters (the definition checks), optional on array items.
    description: StrictStr | None = None


class StringParameter(_Parameter):
    """A string matching an anchored `pattern`, or one of `enum`."""

    type: Literal["string"]
    pattern: StrictStr | None = None
    enum: list[StrictStr] | None = None
    max_length: Annotated[StrictInt, Field(ge=1, le=4096)] = 128
    default: StrictStr | None = None
    allow_leading_dash: StrictBool = False
    allow_wildcards: StrictBool = False

    @field_validator("pattern")
    @classmethod
    def _anchored(cls, pattern: str | None) -> str | None:
        return None if pattern is None else check_anchored_pattern(pattern)

    @model_validator(mode="after")
    def _consistent(self) -> StringParameter:
        if (self.pattern is None) == (self.enum is None):
            raise ValueError("a string parameter needs exactly one of `pattern` or `enum`")
        if self.enum is not None:
            if not self.enum or len(set(self.enum)) != len(self.enum):
                raise ValueError("`enum` must list distinct values")
            for value in self.enum:
                if (problem := self._shape_problem(value)) is not None:
                    raise ValueError(f"enum value {value!r} {problem}")
        if self.default is not None and (problem := self.problem(self.default)) is not None:
            raise ValueError(f"default {self.default!r} {problem}")
        return self

    def _shape_problem(self, value: str) -> str | None:
        if value == "":
            return "must not be empty"
        if len(value) > self.max_length:
            return f"is {len(value)} characters long; at most {self.max_length} are accepted"
        if (char := _control_character(value)) is not None:
            return (
                f"contains the control character {char!r}; a value is one argument on one line and"
                " cannot carry a second line or command"
            )
        if value.startswith("-") and not self.allow_leading_dash:
            return (
                "starts with '-', which the program would read as an option (such as"
                " --all-namespaces); give the name of the resource itself"
            )
        if not self.allow_wildcards and (found := sorted(WILDCARD_CHARACTERS.intersection(value))):
            shown = ", ".join(repr(char) for char in found)
            return (
                f"contains {shown}: wildcards and patterns are not accepted; name each target"
                " explicitly, one value per target"
            )
        return None

    def problem(self, value: object) -> str | None:
        """Why `value` is unacceptable, in words an agent can act on; None when it is fine."""
        if not isinstance(value, str):
            return f"must be a string, not {_json_type(value)}"
        if (problem := self._shape_problem(value)) is not None:
            return problem
        if self.enum is not None and value not in self.enum:
            return "must be one of: " + ", ".join(self.enum)
        if self.pattern is not None and re.fullmatch(self.pattern, value, re.ASCII) is None:
            return f"does not match the required pattern {self.pattern}" + _pattern_hint(value)
        return None

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string"}
        if self.description:
            schema["description"] = self.description
        if self.enum is not None:
            schema["enum"] = list(self.enum)
        else:
            schema.update({"pattern": self.pattern, "minLength": 1, "maxLength": self.max_length})
        if self.default is not None:
            schema["default"] = self.default
        return schema


class IntegerParameter(_Parameter):
    """An integer within inclusive bounds."""

    type: Literal["integer"]
    minimum: StrictInt
    maximum: StrictInt
    default: StrictInt | None = None
    allow_leading_dash: StrictBool = False

    @model_validator(mode="after")
    def _consistent(self) -> IntegerParameter:
        if self.minimum > self.maximum:
            raise ValueError("`minimum` is greater than `maximum`")
        if self.minimum < 0 and not self.allow_leading_dash:
            raise ValueError(
                "a negative value would become an argument starting with '-'; set minimum >= 0"
                " or allow_leading_dash: true"
            )
        if self.default is not None and (problem := self.problem(self.default)) is not None:
            raise ValueError(f"default {self.default} {problem}")
        return self

    def problem(self, value: object) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, not {_json_type(value)}"
        if not self.minimum <= value <= self.maximum:
            return f"must be between {self.minimum} and {self.maximum}"
        return None

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "integer",
            "minimum": self.minimum,
            "maximum": self.maximum,
        }
        if self.description:
            schema = {"type": "integer", "description": self.description} | schema
        if self.default is not None:
            schema["default"] = self.default
        return schema


ScalarParameter = Annotated[StringParameter | IntegerParameter, Field(discriminator="type")]


class ArrayParameter(_Parameter):
    """Distinct values, each becoming its own argv element and its own policy target."""

    type: Literal["array"]
    items: ScalarParameter
    # At least one: an empty list often means "everything" to the program underneath.
    min_items: Annotated[StrictInt, Field(ge=1)] = 1
    max_items: Annotated[StrictInt, Field(ge=1, le=100)]

    @model_validator(mode="after")
    def _consistent(self) -> ArrayParameter:
        if self.min_items > self.max_items:
            raise ValueError("`min_items` is greater than `max_items`")
        if self.items.default is not None:
            raise ValueError("array items cannot have a default")
        return self

    def problems(self, value: object) -> list[tuple[str, str]]:
        """(suffix, message) pairs: suffix "" for the array itself, "[i]" for one item."""
        if not isinstance(value, list | tuple):
            return [("", f"must be an array, not {_json_type(value)}")]
        if not self.min_items <= len(value) <= self.max_items:
            return [
                (
                    "",
                    f"has {len(value)} items; between {self.min_items} and {self.max_items} are"
                    " accepted per action (split larger changes into several actions)",
                )
            ]
        found: list[tuple[str, str]] = []
        seen: set[object] = set()
        for index, item in enumerate(value):
            problem = self.items.problem(item)
            if problem is None and item in seen:
                problem = "repeats an earlier item; list each target once"
            if problem is not None:
                found.append((f"[{index}]", problem))
            seen.add(item)
        return found

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "array"}
        if self.description:
            schema["description"] = self.description
        return schema | {
            "items": self.items.json_schema(),
            "minItems": self.min_items,
            "maxItems": self.max_items,
            "uniqueItems": True,
        }


Parameter = Annotated[StringParameter | IntegerParameter | ArrayParameter, Field(discriminator="type")]
PARAMETER_TYPES = frozenset({"string", "integer", "array"})


def _pattern_hint(value: str) -> str:
    if ".." in value:
        return "; '..' (a parent directory) is not accepted"
    if found := sorted(_SHELL_SYNTAX.intersection(value)):
        shown = " ".join(found)
        return (
            f"; shell syntax ({shown}) has no effect here: the value is passed to the program as"
            " one literal argument, so give only the name"
        )
    return ""


def _json_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return names.get(type(value), type(value).__name__)
