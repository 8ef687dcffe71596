"""Load command tool definitions from `policies/tools/*.yaml`, all or nothing.

A file holds a `tools:` list. Any problem in any file (invalid YAML, a duplicate key, an
unanchored pattern, an argv naming an unknown parameter, a tool defined twice) fails the whole
load with every problem listed by file and field, so the caller keeps serving the previous set
rather than a partial one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from outbox.commands.definitions import (
    EGRESS_PROFILES_CONTEXT,
    PROFILES_CONTEXT,
    CommandToolDefinition,
    DefinitionRuleError,
)
from outbox.commands.parameters import PARAMETER_TYPES
from outbox.commands.profiles import SandboxProfile, builtin_profiles
from outbox.commands.sandbox import SandboxSettings
from outbox.commands.tool import CommandTool
from outbox.yamlfiles import YAMLFileError, parse_yaml


@dataclass(frozen=True, slots=True)
class DefinitionProblem:
    """One broken field: `field` is a path such as `tools[2].parameters.name.pattern`."""

    file: Path
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}" if self.field else f"{self.file}: {self.message}"


class ToolDefinitionError(Exception):
    """The definitions cannot be loaded; `problems` lists each with its file and field."""

    def __init__(self, problems: list[DefinitionProblem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = problems

    @property
    def file(self) -> Path:
        return self.problems[0].file

    @property
    def field(self) -> str:
        return self.problems[0].field


@dataclass(frozen=True, slots=True)
class CommandToolSet:
    """Every loaded definition by tool name, where it came from, and a digest of the files."""

    definitions: Mapping[str, CommandToolDefinition] = field(default_factory=dict)
    sources: Mapping[str, Path] = field(default_factory=dict)
    # sha256 over the files' names and bytes: which definitions an action was decided under.
    digest: str = hashlib.sha256().hexdigest()

    def build_tools(self, settings: SandboxSettings) -> list[CommandTool]:
        return [CommandTool(definition, settings) for definition in self.definitions.values()]


def load_command_tools(
    directory: Path, *, profiles: Mapping[str, SandboxProfile] | Collection[str] | None = None
) -> CommandToolSet:
    """Read every `*.yaml`/`*.yml` in `directory`; raise ToolDefinitionError on any problem.

    `profiles` are the sandbox profiles definitions may use (default: the built-in ones); given
    as a mapping, a tool declaring `egress` must also name one of them that has egress. A
    missing directory means no command tools.
    """
    chosen = builtin_profiles() if profiles is None else profiles
    context: dict[str, frozenset[str]] = {PROFILES_CONTEXT: frozenset(chosen)}
    if isinstance(chosen, Mapping):
        context[EGRESS_PROFILES_CONTEXT] = frozenset(name for name, profile in chosen.items() if profile.egress)
    if not directory.is_dir():
        return CommandToolSet()
    files = sorted(path for path in directory.iterdir() if path.suffix in {".yaml", ".yml"} and path.is_file())
    problems: list[DefinitionProblem] = []
    definitions: dict[str, CommandToolDefinition] = {}
    sources: dict[str, Path] = {}
    digest = hashlib.sha256()
    for path in files:
        content = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + content + b"\0")
        for index, definition, found in _definitions_in(path, content, context):
            problems += found
            if definition is None:
                continue
            if definition.name in definitions:
                where = sources[definition.name]
                message = f"tool {definition.name!r} is already defined in {where}"
                problems.append(DefinitionProblem(path, f"tools[{index}].name", message))
                continue
            definitions[definition.name] = definition
            sources[definition.name] = path
    if problems:
        raise ToolDefinitionError(problems)
    ordered = dict(sorted(definitions.items()))
    return CommandToolSet(ordered, {name: sources[name] for name in ordered}, digest.hexdigest())


def _definitions_in(
    path: Path, content: bytes, context: Mapping[str, frozenset[str]]
) -> Iterator[tuple[int, CommandToolDefinition | None, list[DefinitionProblem]]]:
    try:
        document = parse_yaml(content, str(path))
    except YAMLFileError as error:
        where = f"line {error.line}: " if error.line is not None else ""
        yield -1, None, [DefinitionProblem(path, "", f"not valid YAML: {where}{error.problem}")]
        return
    if not isinstance(document, dict) or set(document) != {"tools"} or not isinstance(document["tools"], list):
        message = "expected a mapping with one key, `tools`, holding a list of tool definitions"
        yield -1, None, [DefinitionProblem(path, "", message)]
        return
    for index, raw in enumerate(document["tools"]):
        try:
            definition = CommandToolDefinition.model_validate(raw, context=context)
        except ValidationError as error:
            yield index, None, list(_problems(path, f"tools[{index}]", error))
        else:
            yield index, definition, []


def _problems(path: Path, prefix: str, error: ValidationError) -> Iterator[DefinitionProblem]:
    for detail in error.errors():
        location = _field_path(prefix, detail["loc"])
        cause = detail.get("ctx", {}).get("error")
        if isinstance(cause, DefinitionRuleError):
            for relative, message in cause.problems:
                yield DefinitionProblem(path, _join(location, relative), message)
        else:
            yield DefinitionProblem(path, location, _message(detail))


def _field_path(prefix: str, location: tuple[int | str, ...]) -> str:
    """`tools[2].parameters.name.pattern`, without pydantic's union tags (`string`, ...)."""
    path = prefix
    for position, part in enumerate(location):
        after_parameter = position >= 2 and location[position - 2] == "parameters"
        after_items = position >= 1 and location[position - 1] == "items"
        if part in PARAMETER_TYPES and (after_parameter or after_items):
            continue
        path = f"{path}[{part}]" if isinstance(part, int) else _join(path, str(part))
    return path


def _join(path: str, relative: str) -> str:
    if not relative:
        return path
    return path + relative if relative.startswith("[") else f"{path}.{relative}"


def _message(detail: Mapping[str, Any]) -> str:
    message = str(detail["msg"])
    # "Value error, pattern ... must be anchored" reads better without pydantic's prefix.
    return message.removeprefix("Value error, ")
