"""A tool with none of the optional capabilities, whose targets are its arguments.

It is how a policy case written as `object`/`act` or `targets` (no tool) reaches the runtime
path: the pipeline decides on targets, whichever tool produced them. It is also the plainest
tool there is, so it shows what the pipeline does with a tool that has no preview, no dry run,
no blast-radius bound, no destructive acts of its own and no configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from outbox.toolkit.base import ExecutionContext, Failed, Target, ToolOutcome
from outbox.toolkit.registry import ToolServices

NAME = "test.targets"


class TargetArg(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: str = Field(min_length=1)
    act: str = Field(min_length=1)


class TargetsArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: list[TargetArg] = Field(min_length=1)


class TargetsTool:
    """Implements the `Tool` protocol and nothing more."""

    name = NAME
    description = "Touches exactly the targets it is given (tests only); never runs anything."

    def args_schema(self) -> dict[str, Any]:
        return TargetsArgs.model_json_schema()

    def parse_args(self, raw: dict[str, Any]) -> BaseModel:
        return TargetsArgs.model_validate(raw)

    def targets(self, args: BaseModel) -> list[Target]:
        assert isinstance(args, TargetsArgs)
        return [Target(t.object, t.act) for t in args.targets]

    def execute(self, ctx: ExecutionContext, args: BaseModel) -> ToolOutcome:
        return Failed("the test tool runs nothing", retryable=False)


def provide_targets_tool(_policy_dir: Path, _services: ToolServices) -> list[TargetsTool]:
    return [TargetsTool()]
