"""Answers of the tools, policy and health endpoints, so the OpenAPI document describes them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from outbox.tools.listing import ToolListing


class ToolOut(BaseModel):
    name: str
    function_name: str = Field(description="The same tool spelled with `__` for model APIs that refuse dots.")
    description: str
    parameters: dict[str, Any] = Field(description="The JSON Schema of the tool's arguments.")
    output_schema: dict[str, Any] = Field(
        description="The JSON Schema of what a call answers with: the action, as POST /v1/actions returns it."
    )
    callable: bool = Field(
        description=(
            "Whether policy can allow you, or ask a human to approve, some call of this tool. Only"
            " `?all=true` lists tools with `false`; policy still decides each call."
        )
    )
    not_callable_reason: str | None = Field(
        default=None, description="Why you may not call it, when `callable` is false."
    )
    available: bool = Field(
        description="Whether the tool can run on this server now; calls to an unavailable tool are refused with 503."
    )
    unavailable_reason: str | None = Field(
        default=None,
        description="What is missing on this server (a sandbox, a secret, a mount) when `available` is false.",
    )

    @classmethod
    def of(cls, entry: ToolListing) -> ToolOut:
        return cls(
            name=entry.name,
            function_name=entry.function_name,
            description=entry.description,
            parameters=entry.parameters,
            output_schema=dict(entry.output_schema),
            callable=entry.callable,
            not_callable_reason=entry.not_callable_reason,
            available=entry.available,
            unavailable_reason=entry.unavailable_reason,
        )


class ToolsOut(BaseModel):
    tools: list[ToolOut]
    policy_version: str


class ReloadErrorOut(BaseModel):
    at: str = Field(description="When the failed reload happened (ISO 8601).")
    error: str | None = Field(default=None, description="What failed; shown to the admin token only.")


class PolicyStatusOut(BaseModel):
    version: str = Field(description="The content hash of the policy directory (`sha256:…`).")
    loaded_at: str = Field(description="When this version was loaded (ISO 8601).")
    rules: int
    indexed: bool
    tools: list[str]
    last_reload_error: ReloadErrorOut | None
    directory: str | None = Field(default=None, description="Where the policy lives; the admin token only.")
    git_commit: str | None = Field(default=None, description="The policy's git commit; the admin token only.")


class PolicyReloadOut(BaseModel):
    version: str
    loaded_at: str
