"""The contract every tool implements.

A tool turns validated agent arguments into policy targets at submission time, and into a real
side effect at execution time. The pipeline (authentication, idempotency, policy, approval,
leases, retries, audit) is the same for every tool; a tool only owns what is specific to it.

Beyond `Tool`, a tool may have optional capabilities, each a protocol below: `Previewable`,
`DryRunnable`, `BlastRadiusBounded`, `DescribesTargets`, `DeclaresDestructiveActs`,
`Configured`, `ChecksAvailability`. A tool has one by implementing it; the pipeline asks with `isinstance`, so mypy
checks every call, and a tool without it simply goes without (no preview, no dry run, …).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel


@dataclass(frozen=True, slots=True)
class Target:
    """One thing an action touches, as policy sees it: `(object, act)`."""

    object: str
    act: str


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One offending argument, reported to the agent as part of a 422."""

    field: str
    message: str


class ToolArgumentsError(Exception):
    """Arguments that parse but are still unacceptable (an unknown sending domain, say).

    `hint` tells an agent what to do instead; it ends up in the problem+json answer.
    """

    def __init__(self, problems: list[FieldProblem], hint: str | None = None) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = problems
        self.hint = hint


@dataclass(frozen=True, slots=True)
class Succeeded:
    """The side effect happened. `artifact` is what was executed, `response` what came back."""

    artifact: dict[str, Any]
    response: dict[str, Any]
    summary: str = "succeeded"


@dataclass(frozen=True, slots=True)
class Failed:
    """The side effect did not happen (or failed). Retryable failures go back to the queue."""

    reason: str
    retryable: bool
    artifact: dict[str, Any] = field(default_factory=dict)
    response: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Deferred:
    """Nothing happened yet: a budget window or send window is closed until `not_before`.

    Deferral is not a failure and does not consume an attempt.
    """

    not_before: datetime
    reason: str


ToolOutcome = Succeeded | Failed | Deferred


@dataclass(frozen=True, slots=True)
class ExecutionContext:
    """What a tool may know about the action it executes."""

    action_id: str
    agent_id: str
    agent_name: str
    on_behalf_of: str | None
    idempotency_key: str
    attempt: int


@runtime_checkable
class Tool(Protocol):
    """A tool agents may call through the outbox."""

    @property
    def name(self) -> str:
        """Dotted tool name agents call, e.g. `http.request`."""
        ...

    @property
    def description(self) -> str:
        """What the tool does, written for an agent choosing tools."""
        ...

    def args_schema(self) -> dict[str, Any]:
        """JSON Schema of the arguments, usable directly as a function-calling definition."""
        ...

    def parse_args(self, raw: dict[str, Any]) -> BaseModel:
        """Validate and normalise raw arguments.

        Raises pydantic.ValidationError or ToolArgumentsError; both become 422 answers.
        """
        ...

    def targets(self, args: BaseModel) -> list[Target]:
        """Every (object, act) the call touches; policy checks each and the strictest wins."""
        ...

    def execute(self, ctx: ExecutionContext, args: BaseModel) -> ToolOutcome:
        """Perform the side effect. Runs in a worker, at most once per claimed attempt."""
        ...


# ---------------------------------------------------------------------------------------------
# Optional capabilities. A tool has one when it implements the protocol; the pipeline asks with
# `isinstance(tool, Previewable)` and mypy checks every use. A method set to None counts as
# absent (`typing.runtime_checkable` treats a None callable member so).


@runtime_checkable
class Previewable(Protocol):
    """Shows what a call would do, for the action record and the approver, before it runs.

    Execution compares the preview again before running, so a reloaded definition that would
    run something else than what was submitted (and approved) runs nothing.
    """

    def preview(self, args: BaseModel) -> dict[str, Any]: ...


@runtime_checkable
class DryRunOutput(Protocol):
    """What a dry run did: what ran, and what came back."""

    def artifact(self) -> dict[str, Any]: ...

    def response(self) -> dict[str, Any]: ...


@runtime_checkable
class DryRunnable(Protocol):
    """Can run a harmless version of the call at submission, whose output the approver sees."""

    def dry_run(self, args: BaseModel) -> DryRunOutput | None:
        """The dry run's output, or None when this call has no dry run. May raise when it
        cannot run; the pipeline records the error in the preview instead."""
        ...


@runtime_checkable
class BlastRadiusBounded(Protocol):
    """Sends a call a human must approve because of how much it touches, whatever policy says."""

    def approval_required_by_blast_radius(self, args: BaseModel) -> str | None:
        """Why a human must approve this call, or None when it is within the tool's bound."""
        ...


@runtime_checkable
class DescribesTargets(Protocol):
    """Declares every shape of target `targets()` can produce, for static policy analysis
    (`outbox policy check` and `diff`; the pattern language is in `outbox/policytools/targets.py`)."""

    def target_patterns(self) -> list[Target]: ...


@runtime_checkable
class DeclaresDestructiveActs(Protocol):
    """Names acts of its own that `policy check` treats as destructive (mail's `bulk`)."""

    @property
    def destructive_acts(self) -> frozenset[str]: ...


@runtime_checkable
class Configured(Protocol):
    """Built from a configuration file that operators also read through the outbox (the mail
    config behind `email.send`, say); `config` is that file, parsed."""

    @property
    def config(self) -> object: ...


@runtime_checkable
class ChecksAvailability(Protocol):
    """Knows when it cannot run on this server (no usable sandbox, a secret or mount it needs is
    missing). A call to such a tool is refused before anything is recorded (503, the key not
    consumed), `/readyz` reports the tool degraded and `/v1/tools` marks it unavailable, instead
    of an action that fails and whose failure is replayed after the server is fixed."""

    def unavailable_reason(self) -> str | None:
        """Why the tool cannot run here now, in words an operator can act on; None when it can.
        Called on every submission: cheap, or cached by the tool."""
        ...
