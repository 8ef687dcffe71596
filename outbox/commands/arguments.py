"""Agent arguments for a command tool: checked value by value, reported field by field.

Every problem names the parameter (`names[2]`, not "invalid input") and says what to do
instead, because the reader is usually a language model that will try again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from outbox.commands.definitions import CommandToolDefinition
from outbox.commands.parameters import ArgumentValue, ArrayParameter, IntegerParameter
from outbox.toolkit.base import FieldProblem, ToolArgumentsError

ARGUMENTS_HINT = (
    "Each parameter is one literal value that the program receives as a single argument: no"
    " shell syntax, no options, no wildcards or partial names. Name every target explicitly;"
    " see the tool's JSON Schema for the accepted values."
)


def validate_arguments(definition: CommandToolDefinition, raw: object) -> dict[str, ArgumentValue]:
    """Checked, defaulted values by parameter name; ToolArgumentsError listing every problem."""
    if not isinstance(raw, Mapping):
        raise ToolArgumentsError([FieldProblem("", "arguments must be a JSON object")], ARGUMENTS_HINT)
    problems: list[FieldProblem] = []
    values: dict[str, ArgumentValue] = {}
    accepted = ", ".join(definition.parameters) or "none"
    for name in raw:
        if name not in definition.parameters:
            problems.append(FieldProblem(str(name), f"unknown parameter; this tool accepts: {accepted}"))
    for name, spec in definition.parameters.items():
        if name not in raw:
            default = None if isinstance(spec, ArrayParameter) else spec.default
            if default is None:
                problems.append(FieldProblem(name, f"required: {spec.description}"))
            else:
                values[name] = default
            continue
        value = raw[name]
        if isinstance(spec, ArrayParameter):
            found = spec.problems(value)
            problems += [FieldProblem(name + suffix, message) for suffix, message in found]
            if not found:
                assert isinstance(value, list | tuple)
                values[name] = tuple(value)
        elif (problem := spec.problem(value)) is not None:
            problems.append(FieldProblem(name, problem))
        else:
            assert isinstance(value, str | int)
            values[name] = value
    if problems:
        raise ToolArgumentsError(problems, ARGUMENTS_HINT)
    return values


def arguments_model(definition: CommandToolDefinition) -> type[BaseModel]:
    """A frozen pydantic model named after the tool, holding validated arguments."""
    fields: dict[str, Any] = {}
    for name, spec in definition.parameters.items():
        python_type: Any
        if isinstance(spec, ArrayParameter):
            python_type = tuple[int, ...] if isinstance(spec.items, IntegerParameter) else tuple[str, ...]
        else:
            python_type = int if isinstance(spec, IntegerParameter) else str
        fields[name] = (python_type, Field(description=spec.description))
    model_name = "".join(part.title() for part in definition.name.replace(".", "_").split("_"))
    return create_model(
        f"{model_name}Arguments",
        __config__=ConfigDict(frozen=True, extra="forbid"),
        **fields,
    )
