"""Command tool definitions, as declared in `policies/tools/*.yaml` and reviewed in git.

The "unused branches" incident is why a definition is this strict: a bot that accepted English
deleted twelve namespaces, one of them only because its name contained "branch". Here an agent
can only fill typed parameters, every target is named by a value that must match an anchored
pattern, each array element is its own policy target, and above a bound a human approves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from outbox.commands.egress import host_pattern_problem
from outbox.commands.parameters import ArrayParameter, IntegerParameter, Parameter, StringParameter
from outbox.commands.sandbox import SecretBinding
from outbox.commands.templates import PARAMETER_NAME, object_placeholders, parse_argv_element

TOOL_NAME = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
# Validation context keys: the sandbox profile names a definition may refer to, and those of
# them that have egress (only their tools may declare destinations).
PROFILES_CONTEXT = "profiles"
EGRESS_PROFILES_CONTEXT = "egress_profiles"


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


_PORT_PLACEHOLDER = re.compile(r"^\{[a-z][a-z0-9_]*\}$")


def _port_or_placeholder(value: object) -> object:
    """A port number 1-65535, or `"{param}"` naming an integer parameter (checked with the rest)."""
    if value is None or (isinstance(value, str) and _PORT_PLACEHOLDER.fullmatch(value)):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return value
    raise ValueError(f"{value!r} is not a port (1-65535) or a {{parameter}} naming an integer parameter")


class EgressRule(BaseModel):
    """One destination the tool may connect to, through the egress proxy.

    Either `destination`, naming a server-side destination (`OUTBOX_SANDBOX_DESTINATIONS`),
    usually from a parameter (`"{cluster}"`: the cluster the agent chose is where kubectl may
    go); or `host` (a host pattern: exact, or `*.example.com` for its subdomains) and `port`
    (a number, or `"{param}"` naming an integer parameter). Placeholders name string parameters
    restricted by `enum` or `pattern`. Only the server may allow private addresses.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    destination: Annotated[StrictStr, Field(min_length=1, max_length=128)] | None = None
    host: Annotated[StrictStr, Field(min_length=1, max_length=260)] | None = None
    port: Annotated[int | str | None, BeforeValidator(_port_or_placeholder)] = None

    @model_validator(mode="after")
    def _one_kind(self) -> EgressRule:
        if (self.destination is None) == (self.host is None):
            raise ValueError("give either `destination` (a server-side destination) or `host` and `port`")
        if self.host is not None and self.port is None:
            raise ValueError("`host` needs a `port`")
        if self.destination is not None and self.port is not None:
            raise ValueError("a named `destination` has its port in the server's configuration; remove `port`")
        return self


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
    # Where the command may connect (through the egress proxy); needs a profile with egress.
    egress: list[EgressRule] = Field(default_factory=list)

    @field_validator("description")
    @classmethod
    def _not_blank(cls, description: str) -> str:
        if not description.strip():
            raise ValueError("describe the tool for the agents that will call it")
        return description.strip()

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> CommandToolDefinition:
        context = info.context if isinstance(info.context, Mapping) else {}
        problems = list(_rule_problems(self, context.get(PROFILES_CONTEXT)))
        problems += _egress_problems(self, context.get(EGRESS_PROFILES_CONTEXT))
        if problems:
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
    used |= {name for rule in definition.egress for name in egress_placeholders(rule)}
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


def egress_placeholders(rule: EgressRule) -> list[str]:
    """Parameter names a rule's templates use (stray braces are reported by `_egress_problems`)."""
    names: list[str] = []
    for text in (rule.destination, rule.host, rule.port):
        if isinstance(text, str):
            try:
                names += object_placeholders(text)
            except ValueError:
                continue
    return names


def _egress_problems(definition: CommandToolDefinition, egress_profiles: object) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if (
        definition.egress
        and isinstance(egress_profiles, frozenset | set | list | tuple)
        and definition.sandbox not in egress_profiles
    ):
        problems.append(
            ("egress", f"sandbox profile {definition.sandbox!r} has no egress: use a profile with `egress: true`")
        )
    for index, rule in enumerate(definition.egress):
        for field in ("destination", "host"):
            text = getattr(rule, field)
            if text is not None:
                problems += [
                    (f"egress[{index}].{field}", message)
                    for message in _template_problems(text, definition.parameters, field == "host")
                ]
        if isinstance(rule.port, str):
            name = rule.port[1:-1]
            spec = definition.parameters.get(name)
            if not isinstance(spec, IntegerParameter) or spec.minimum < 1 or spec.maximum > 65535:
                problems.append((f"egress[{index}].port", f"{rule.port} must name an integer parameter within 1-65535"))
    return problems


def _template_problems(text: str, parameters: Mapping[str, Parameter], is_host: bool) -> Iterator[str]:
    """Unknown or unconstrained placeholders; for a host, every value an enum allows must be valid."""
    try:
        names = object_placeholders(text)
    except ValueError as error:
        yield str(error)
        return
    expansions = [text]
    for name in dict.fromkeys(names):
        spec = parameters.get(name)
        if not isinstance(spec, StringParameter):
            yield f"{{{name}}} must name a string parameter (with `enum` or `pattern`), not {_kind(spec)}"
            return
        if spec.enum is not None:
            expansions = [expanded.replace(f"{{{name}}}", value) for expanded in expansions for value in spec.enum]
    if not is_host:
        return
    for expanded in expansions:
        if "{" not in expanded and (problem := host_pattern_problem(expanded)) is not None:
            yield problem


def _kind(spec: Parameter | None) -> str:
    return "an unknown parameter" if spec is None else f"a parameter of type {spec.type}"
