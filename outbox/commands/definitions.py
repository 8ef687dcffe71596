"""Command tool definitions, as declared in `policies/tools/*.yaml` and reviewed in git.

The "unused branches" incident is why a definition is this strict: a bot that accepted English
deleted twelve namespaces, one of them only because its name contained "branch". Here an agent
can only fill typed parameters, every target is named by a value that must match an anchored
pattern, each array element is its own policy target, and above a bound a human approves.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from outbox.commands.parameters import ArrayParameter, Parameter
from outbox.commands.sandbox import SecretBinding
from outbox.commands.templates import PARAMETER_NAME, object_placeholders, parse_argv_element

TOOL_NAME = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
# Validation context key: the sandbox profile names a definition may refer to.
PROFILES_CONTEXT = "profiles"


class DefinitionRuleError(ValueError):
    """Cross-field problems of one definition, each with the path of the offending field.

    Raised inside pydantic validation; the loader unpacks `problems` (relative paths such as
    `argv[3]`) so that a broken file is reported field by field.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))
        self.problems = problems


class TargetTemplate(BaseModel):
    """The policy object touched (`k8s:{cluster}/namespace/{name}`) and how (`delete`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    object: Annotated[StrictStr, Field(min_length=1, max_length=512)]
    act: Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9_]*$")]


class CommandToolDefinition(BaseModel):
    """One command tool: what agents may fill in, what runs, and what policy sees."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[StrictStr, Field(pattern=TOOL_NAME, max_length=64)]
    # Written for agents: what the tool does, what it will not do, how to name targets.
    description: Annotated[StrictStr, Field(min_length=1)]
    parameters: dict[StrictStr, Parameter] = Field(default_factory=dict)
    argv: Annotated[list[StrictStr], Field(min_length=1)]
    # Runs at submission, in the same sandbox; its output goes to the approver.
    dry_run: Annotated[list[StrictStr], Field(min_length=1)] | None = None
    targets: Annotated[list[TargetTemplate], Field(min_length=1)]
    sandbox: StrictStr = "default"
    timeout_seconds: Annotated[StrictInt, Field(ge=1, le=3600)] = 60
    output_cap_bytes: Annotated[StrictInt, Field(ge=1024, le=16 * 1024 * 1024)] = 65536
    # More targets than this in one action and a human must approve, whatever policy says.
    approval_above_targets: Annotated[StrictInt, Field(ge=1)] | None = None
    retryable_exit_codes: list[Annotated[StrictInt, Field(ge=1, le=255)]] = Field(default_factory=list)
    secrets: list[SecretBinding] = Field(default_factory=list)

    @field_validator("description")
    @classmethod
    def _not_blank(cls, description: str) -> str:
        if not description.strip():
            raise ValueError("describe the tool for the agents that will call it")
        return description.strip()

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> CommandToolDefinition:
        context = info.context if isinstance(info.context, Mapping) else {}
        if problems := list(_rule_problems(self, context.get(PROFILES_CONTEXT))):
            raise DefinitionRuleError(problems)
        return self

    @property
    def array_parameters(self) -> frozenset[str]:
        return frozenset(name for name, spec in self.parameters.items() if isinstance(spec, ArrayParameter))

    def args_schema(self) -> dict[str, Any]:
        """JSON Schema for the arguments, usable as a function-calling `parameters` object."""
        required = [
            name for name, spec in self.parameters.items() if isinstance(spec, ArrayParameter) or spec.default is None
        ]
        return {
            "type": "object",
            "properties": {name: spec.json_schema() for name, spec in self.parameters.items()},
            "required": required,
            "additionalProperties": False,
        }


def _rule_problems(definition: CommandToolDefinition, profiles: object) -> Iterator[tuple[str, str]]:
    parameters = definition.parameters
    for name, spec in parameters.items():
        if not PARAMETER_NAME.fullmatch(name):
            yield f"parameters.{name}", f"parameter names must match {PARAMETER_NAME.pattern}"
        if not (spec.description or "").strip():
            yield f"parameters.{name}.description", "describe the parameter for agents"
    used: set[str] = set()
    for field in ("argv", "dry_run"):
        template = getattr(definition, field)
        if template is not None:
            yield from _argv_problems(field, template, parameters, used)
    in_targets: set[str] = set()
    for index, target in enumerate(definition.targets):
        path = f"targets[{index}].object"
        try:
            names = object_placeholders(target.object)
        except ValueError as error:
            yield path, str(error)
            continue
        for name in names:
            if name not in parameters:
                yield path, f"unknown parameter {name!r}"
        arrays = sorted({name for name in names if name in definition.array_parameters})
        if len(arrays) > 1:
            yield (
                path,
                f"uses several array parameters ({', '.join(arrays)}); one per target at most",
            )
        in_targets.update(names)
    for name in parameters:
        if name not in used and name not in in_targets:
            yield f"parameters.{name}", "not used by argv, dry_run or targets"
    for name in sorted(definition.array_parameters - in_targets):
        yield (
            f"parameters.{name}",
            "an array parameter must appear in a target object, so policy checks each item",
        )
    if definition.array_parameters and definition.approval_above_targets is None:
        yield (
            "approval_above_targets",
            "required when a parameter is an array: how many targets one action may touch before a human approves",
        )
    if isinstance(profiles, frozenset | set | list | tuple) and definition.sandbox not in profiles:
        known = ", ".join(sorted(str(profile) for profile in profiles))
        yield "sandbox", f"unknown sandbox profile {definition.sandbox!r} (known: {known})"
    if len(set(definition.retryable_exit_codes)) != len(definition.retryable_exit_codes):
        yield "retryable_exit_codes", "lists an exit code twice"
    yield from _secret_problems(definition.secrets)


def _argv_problems(
    field: str, template: list[str], parameters: Mapping[str, object], used: set[str]
) -> Iterator[tuple[str, str]]:
    for index, element in enumerate(template):
        path = f"{field}[{index}]"
        try:
            parsed = parse_argv_element(element)
        except ValueError as error:
            yield path, str(error)
            continue
        if any(ord(char) < 32 or ord(char) == 127 for char in element):
            yield path, "contains a control character"
        if index == 0 and (parsed.param is not None or not element or element.startswith("-")):
            yield path, "the program must be a literal name or absolute path, never a parameter"
        if parsed.param is not None:
            if parsed.param not in parameters:
                yield path, f"unknown parameter {parsed.param!r}"
            used.add(parsed.param)


def _secret_problems(secrets: list[SecretBinding]) -> Iterator[tuple[str, str]]:
    # Environment variable names share one namespace whether they hold a value or a path.
    seen: dict[str, set[str]] = {"name": set(), "file": set(), "env": set()}
    for index, binding in enumerate(secrets):
        for group, field, value in (
            ("name", "name", binding.name),
            ("file", "file", binding.file),
            ("env", "env", binding.env),
            ("env", "path_env", binding.path_env),
        ):
            if value is None:
                continue
            if value in seen[group]:
                yield f"secrets[{index}].{field}", f"{value!r} is used by another secret"
            seen[group].add(value)
