"""The approval digest: what a human approves, reduced to one SHA-256.

The digest covers the agent, the human it acts for, the tool, the normalised arguments, every
resolved target, the preview the approver was shown and the policy version that asked for the
approval. A decision counts only for the digest it was made on, and the digest is recomputed
from the action row before the tool runs: if anything it covers differs, nothing runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from outbox.canonical import digest


def bound_targets(targets: Iterable[Any]) -> list[dict[str, str]]:
    """`(object, act)` pairs from Target objects or from `{"object", "act", ...}` records."""
    pairs: list[dict[str, str]] = []
    for target in targets:
        if isinstance(target, Mapping):
            pairs.append({"object": str(target["object"]), "act": str(target["act"])})
        else:
            pairs.append({"object": target.object, "act": target.act})
    return pairs


def approval_digest(
    *,
    agent: str,
    on_behalf_of: str | None,
    tool: str,
    args: dict[str, Any],
    targets: Iterable[Any],
    preview: dict[str, Any] | None,
    policy_version: str,
) -> str:
    return digest(
        {
            "agent": agent,
            "on_behalf_of": on_behalf_of,
            "tool": tool,
            "args": args,
            "targets": bound_targets(targets),
            "preview": preview,
            "policy_version": policy_version,
        }
    )


class RecordedCall(Protocol):
    """The parts of an action row the digest binds (`outbox.actions.models.Action`)."""

    @property
    def on_behalf_of(self) -> str | None: ...

    @property
    def tool(self) -> str: ...

    @property
    def args(self) -> dict[str, Any]: ...

    @property
    def preview(self) -> dict[str, Any] | None: ...


def action_digest(action: RecordedCall, *, agent: str, targets: Iterable[Any], policy_version: str) -> str:
    """The digest of a recorded action: computed when its approval is opened and again, from the
    row and the tool's current targets, right before it runs. Both go through here, so the two
    can never bind different fields."""
    return approval_digest(
        agent=agent,
        on_behalf_of=action.on_behalf_of,
        tool=action.tool,
        args=action.args,
        targets=targets,
        preview=action.preview,
        policy_version=policy_version,
    )
