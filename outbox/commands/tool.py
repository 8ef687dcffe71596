"""`CommandTool`: one definition from `policies/tools/` as a tool agents can call.

At submission the pipeline calls `parse_args`, `targets`, `approval_required_by_blast_radius`,
`preview` and `dry_run`; a worker later calls `execute`. Each of them re-validates the
arguments, so a model restored from storage or built by hand gets no shortcut to the argv.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from pydantic import BaseModel

from outbox.commands.arguments import arguments_model, validate_arguments
from outbox.commands.definitions import CommandToolDefinition, EgressRule
from outbox.commands.egress import AllowedDestination, host_pattern_problem
from outbox.commands.parameters import ArgumentValue, ArrayParameter, StringParameter
from outbox.commands.probes import isolation_problem
from outbox.commands.sandbox import (
    SandboxConfigurationError,
    SandboxError,
    SandboxResult,
    SandboxSettings,
    SandboxUnavailable,
    command_problem,
    run_command,
)
from outbox.commands.templates import object_placeholders, render_argv, render_targets
from outbox.toolkit.base import ExecutionContext, Failed, Succeeded, Target, ToolArgumentsError, ToolOutcome

log = structlog.get_logger(__name__)

_REASON_DETAIL_CHARS = 200


class CommandTool:
    """Typed arguments in, one sandboxed argv out, the exact result recorded."""

    def __init__(self, definition: CommandToolDefinition, settings: SandboxSettings) -> None:
        self.definition = definition
        self.name: str = definition.name
        self._settings = settings
        self.description: str = definition.description
        self._arguments_model = arguments_model(definition)

    def unavailable_reason(self) -> str | None:
        """Why this tool cannot run here now (`ChecksAvailability`): what `execute` would refuse
        before running anything (no usable bubblewrap, a secret, mount or prlimit missing).

        A tool that cannot run is still loaded and listed, marked with this reason (`/v1/tools`,
        MCP `tools/list`, `/readyz`), so that an agent and the operator see the tool and what is
        missing, e.g. the `repo` directory the operator has not named. Then the profile's
        isolation probe (`outbox.commands.probes`): a claim that does not hold is named here."""
        problem = command_problem(self._settings, self.definition.sandbox, self.definition.secrets)
        problem = "; ".join(found for found in (problem, self._destinations_problem()) if found) or None
        return problem or isolation_problem(self._settings, self.definition.sandbox)

    def _destinations_problem(self) -> str | None:
        """A destination rule none of whose possible names (every enum value) is configured."""
        for rule in self.definition.egress:
            if rule.destination is None:
                continue
            names = [rule.destination]
            for name in object_placeholders(rule.destination):
                spec = self.definition.parameters[name]
                if not isinstance(spec, StringParameter) or spec.enum is None:
                    return None  # any name matching a pattern: only a run can tell
                names = [text.replace("{" + name + "}", value) for text in names for value in spec.enum]
            if not any(name in self._settings.destinations for name in names):
                listed = ", ".join(repr(name) for name in sorted(names))
                return (
                    f"none of the destinations {listed} is configured on this server: set"
                    " OUTBOX_SANDBOX_DESTINATIONS (JSON name to host, port)"
                )
        return None

    def args_schema(self) -> dict[str, Any]:
        return self.definition.args_schema()

    def parse_args(self, raw: dict[str, Any]) -> BaseModel:
        """Validated arguments; ToolArgumentsError naming each offending parameter otherwise."""
        return self._arguments_model.model_validate(validate_arguments(self.definition, raw))

    def argv(self, args: BaseModel) -> list[str]:
        """The exact argv `execute` runs."""
        return render_argv(self.definition.argv, self._values(args))

    def dry_run_argv(self, args: BaseModel) -> list[str] | None:
        if self.definition.dry_run is None:
            return None
        return render_argv(self.definition.dry_run, self._values(args))

    def targets(self, args: BaseModel) -> list[Target]:
        templates = [(target.object, target.act) for target in self.definition.targets]
        return render_targets(templates, self._values(args))

    def target_patterns(self) -> list[Target]:
        """Every target shape this tool can produce, for `outbox policy check` and `diff`.

        Enum parameters expand to their values (so a rule naming an unknown cluster is caught);
        other parameters stay `{param}` placeholders, or become a final `/**` when their pattern
        admits `/` (a path).
        """
        patterns: list[Target] = []
        for template in self.definition.targets:
            objects = [template.object]
            for name, parameter in self.definition.parameters.items():
                placeholder = "{" + name + "}"
                item = parameter.items if isinstance(parameter, ArrayParameter) else parameter
                enum = item.enum if isinstance(item, StringParameter) else None
                pattern = (item.pattern if isinstance(item, StringParameter) else None) or ""
                expanded: list[str] = []
                for obj in objects:
                    if placeholder not in obj:
                        expanded.append(obj)
                    elif enum:
                        expanded.extend(obj.replace(placeholder, value) for value in enum)
                    elif "/" in pattern and obj.endswith("/" + placeholder):
                        expanded.append(obj.removesuffix("/" + placeholder) + "/**")
                    else:
                        expanded.append(obj)
                objects = expanded
            patterns.extend(Target(obj, template.act) for obj in objects)
        return patterns

    def approval_required_by_blast_radius(self, args: BaseModel) -> str | None:
        """Why a human must approve because of how many targets one action touches, or None."""
        bound = self.definition.approval_above_targets
        count = len(self.targets(args))
        if bound is None or count <= bound:
            return None
        return (
            f"{self.name} would touch {count} targets in one action; above {bound} a human"
            " approves before anything runs"
        )

    def preview(self, args: BaseModel) -> dict[str, Any]:
        """What would run, for the action record and the approval message."""
        return {
            "tool": self.name,
            "argv": self.argv(args),
            "dry_run_argv": self.dry_run_argv(args),
            "targets": [{"object": target.object, "act": target.act} for target in self.targets(args)],
            "sandbox": self.definition.sandbox,
            "timeout_seconds": self.definition.timeout_seconds,
            "egress": self._egress_preview(args),
        }

    def egress(self, args: BaseModel) -> list[AllowedDestination]:
        """Where this call may connect; SandboxConfigurationError for an unconfigured destination."""
        return allowed_destinations(self.definition.egress, self._values(args), self._settings)

    def _egress_preview(self, args: BaseModel) -> list[str]:
        try:
            return [f"{allowed.host}:{allowed.port} ({allowed.source})" for allowed in self.egress(args)]
        except SandboxConfigurationError as error:
            return [f"unavailable: {error}"]

    def dry_run(self, args: BaseModel) -> SandboxResult | None:
        """Run the definition's dry-run argv in the same sandbox; None when it has none.

        Raises SandboxError when the sandbox cannot run it (the caller decides whether an
        action without a preview may still go to an approver).
        """
        argv = self.dry_run_argv(args)
        return None if argv is None else self._run(argv, args)

    def execute(self, ctx: ExecutionContext, args: BaseModel) -> ToolOutcome:
        try:
            argv = self.argv(args)
        except ToolArgumentsError as error:
            # The definitions were reloaded since submission and no longer accept these values.
            return Failed(
                reason=f"not executed: the arguments do not satisfy the tool's current definition ({error})",
                retryable=False,
                artifact={"executed": False},
            )
        try:
            result = self._run(argv, args)
        except SandboxError as error:
            log.warning("command.not_executed", action_id=ctx.action_id, tool=self.name, error=str(error))
            return Failed(
                reason=f"not executed: {error}",
                retryable=False,
                artifact={"argv": argv, "profile": self.definition.sandbox, "executed": False},
            )
        artifact, response = result.artifact(), result.response()
        if result.timed_out:
            return Failed(
                reason=(
                    f"timed out after {self.definition.timeout_seconds} s; the command and every"
                    " process it started were killed"
                ),
                retryable=False,
                artifact=artifact,
                response=response,
            )
        if result.exit_code == 0:
            return Succeeded(
                artifact=artifact,
                response=response,
                summary=f"exit code 0 in {result.duration_seconds:.2f} s",
            )
        return Failed(
            reason=_failure_reason(result),
            retryable=result.exit_code in self.definition.retryable_exit_codes,
            artifact=artifact,
            response=response,
        )

    def _run(self, argv: list[str], args: BaseModel) -> SandboxResult:
        # Fail closed: no command of a profile runs before its probe has shown every claim holds.
        if (problem := isolation_problem(self._settings, self.definition.sandbox)) is not None:
            raise SandboxUnavailable(problem)
        return run_command(
            argv,
            settings=self._settings,
            profile=self.definition.sandbox,
            timeout_seconds=self.definition.timeout_seconds,
            output_cap_bytes=self.definition.output_cap_bytes,
            secrets=self.definition.secrets,
            egress=self.egress(args),
        )

    def _values(self, args: BaseModel) -> dict[str, ArgumentValue]:
        return validate_arguments(self.definition, args.model_dump())


def allowed_destinations(
    rules: Sequence[EgressRule], values: Mapping[str, ArgumentValue], settings: SandboxSettings
) -> list[AllowedDestination]:
    """The rules with this call's values filled in; named destinations from the server's settings."""
    allowed: list[AllowedDestination] = []
    for rule in rules:
        if rule.destination is not None:
            name = _filled(rule.destination, values)
            named = settings.destination(name)
            allowed.append(AllowedDestination(named.host, named.port, named.allow_private, f"destination {name}"))
            continue
        host = _filled(rule.host or "", values)
        if (problem := host_pattern_problem(host)) is not None:
            raise SandboxConfigurationError(f"egress host {problem}")
        port = rule.port if isinstance(rule.port, int) else int(_filled(str(rule.port), values))
        allowed.append(AllowedDestination(host, port))
    return allowed


def _filled(template: str, values: Mapping[str, ArgumentValue]) -> str:
    # Definitions allow only scalar string and integer parameters here (checked at load).
    for name in object_placeholders(template):
        template = template.replace("{" + name + "}", str(values[name]))
    return template


def _failure_reason(result: SandboxResult) -> str:
    last_line = next((line for line in reversed(result.stderr.splitlines()) if line.strip()), "")
    reason = f"exit code {result.exit_code}"
    if last_line:
        reason += ": " + last_line.strip()[:_REASON_DETAIL_CHARS]
    return reason
