"""What the outbox answers, as typed values an agent's code can branch on.

These mirror the server's JSON (`GET /v1/actions/{id}`, `GET /v1/tools`) but are written here,
not imported from the server's schemas: `outbox.client` is installed next to agents that never
run the server, and an older client must keep reading a newer server. So unknown fields are kept
(`extra="allow"`, readable in `model_extra`) rather than refused, and only the fields the
contract has always had are required.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SETTLED_STATUSES",
    "TERMINAL_STATUSES",
    "Action",
    "ActionPage",
    "ActionResult",
    "Decision",
    "ToolDefinition",
]

# The statuses after which nothing more happens to an action.
TERMINAL_STATUSES = frozenset({"denied", "rejected", "expired", "succeeded", "failed", "cancelled"})
# Settled for now: terminal, or deferred (the outbox will run it at `not_before`, by itself; an
# agent has nothing to wait for in between). `awaiting_approval` is not settled: a human decides.
SETTLED_STATUSES = TERMINAL_STATUSES | {"deferred"}


class _Lenient(BaseModel):
    # A newer server may add fields: keep them readable (`model_extra`) rather than failing.
    model_config = ConfigDict(extra="allow", frozen=True)


class Decision(_Lenient):
    """What policy decided at submission: `allow`, `approve` or `deny`, and the rules that did."""

    effect: str
    rules: list[dict[str, Any]] = Field(default_factory=list)
    policy_version: str = ""


class ActionResult(_Lenient):
    """What ran (`artifact`, e.g. the exact request sent) and what came back (`response`)."""

    artifact: dict[str, Any] | None = None
    response: dict[str, Any] | None = None


class Action(_Lenient):
    """One tool call as the outbox records it.

    `replayed` and `retry_after` are not part of the server's body: the client sets them from the
    answer's headers (`Idempotent-Replayed`, `Retry-After`), because they say something about this
    answer (it repeats an earlier one; come back after N seconds), not about the action.
    """

    id: str
    status: str
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    on_behalf_of: str | None = None
    reason: str | None = None
    decision: Decision
    targets: list[dict[str, Any]] = Field(default_factory=list)
    status_reason: str | None = None
    attempts: int = 0
    not_before: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    preview: dict[str, Any] | None = None
    result: ActionResult | None = None
    # The problem document of an outcome a human, an expiry or policy decided (the reason, a hint).
    problem: dict[str, Any] | None = None
    links: dict[str, str] = Field(default_factory=dict)
    replayed: bool = False
    retry_after: float | None = None

    @property
    def is_terminal(self) -> bool:
        """Nothing more will happen to this action."""
        return self.status in TERMINAL_STATUSES

    @property
    def is_settled(self) -> bool:
        """Terminal, or deferred to `not_before` (the outbox runs it then without the agent)."""
        return self.status in SETTLED_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def response(self) -> dict[str, Any] | None:
        """The tool's answer (for `http.request`: status, headers, body), once it ran."""
        return self.result.response if self.result is not None else None

    @property
    def artifact(self) -> dict[str, Any] | None:
        """Exactly what was executed (for `http.request`: the request sent)."""
        return self.result.artifact if self.result is not None else None


class ActionPage(_Lenient):
    """One page of `GET /v1/actions`, newest first; `next_cursor` is None on the last page."""

    items: list[Action]
    next_cursor: str | None = None
    links: dict[str, str] = Field(default_factory=dict)


class ToolDefinition(_Lenient):
    """One entry of `GET /v1/tools`.

    `name` is the canonical name (`http.request`); `function_name` is the same tool spelled for
    model APIs whose names must match `^[a-zA-Z0-9_-]{1,64}$` (`http__request`); the server
    accepts either in `POST /v1/actions`. `callable` (`is_callable` here: no rule lets this agent
    call it, listed only with `all_tools=True`) and `available` (it cannot run on this server now,
    calls answer 503) are None when the server does not say: older servers list every tool.
    """

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    name: str
    function_name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    output_schema: dict[str, Any] | None = None
    is_callable: bool | None = Field(default=None, alias="callable")
    not_callable_reason: str | None = None
    available: bool | None = None
    unavailable_reason: str | None = None
