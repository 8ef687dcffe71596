"""The shadow policy's decision on a submission: made, recorded, counted, never enforced.

Every submission is decided a second time by the shadow policy (`OUTBOX_SHADOW_POLICY_DIR`,
docs/shadow-policy.md): the same subject, the shadow's own tool definition for the targets and the
blast-radius bound when it defines the tool and the arguments parse there (otherwise the live
tool's), the shadow's rules and its approvals.yaml gate. Both outcomes are described by
`outbox.policy.counterfactual`, so a disagreement here means what it means in `outbox policy
replay`. The result is recorded on the action (`shadow`) and in its `action.received` event, in
the same transaction as the action; nothing here changes what the live decision does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from outbox import metrics
from outbox.policy.counterfactual import ChangeKind, Outcome, changes, outcome_of
from outbox.policy.effective import EffectiveDecision, blast_radius, effective_decision
from outbox.policy.matching import Subject
from outbox.policy.store import ActivePolicy
from outbox.toolkit.base import Target, Tool, ToolArgumentsError
from outbox.toolkit.registry import find_tool

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LiveCall:
    """What the live pipeline decided, and from what: the shadow decides the same call."""

    subject: Subject
    tool: Tool
    raw_args: dict[str, Any]
    args: BaseModel
    targets: list[Target]
    verdict: EffectiveDecision


@dataclass(frozen=True, slots=True)
class ShadowDecision:
    """The shadow's outcome next to the live one, and how they differ."""

    tool: str
    live: Outcome
    outcome: Outcome
    changes: tuple[ChangeKind, ...]
    # Whose tool definition gave the targets: `shadow` (it defines the tool and the arguments
    # parse there) or `live`.
    targets_from: str

    def record(self) -> dict[str, Any]:
        """The action's `shadow` column and the `shadow` key of its `action.received` event."""
        return {
            "outcome": self.outcome.record(),
            "changes": [kind.value for kind in self.changes],
            "policy_version": self.outcome.policy_version,
            "live": self.live.record(),
            "targets_from": self.targets_from,
        }

    def count(self) -> None:
        """Count the decision and its disagreements (after the submission committed)."""
        metrics.record_shadow_decision(self.tool, [kind.value for kind in self.changes])


def decide_shadow(shadow: ActivePolicy, live: ActivePolicy, call: LiveCall) -> ShadowDecision:
    """The shadow's decision on a call the live policy decided (see the module docstring)."""
    tool, args, targets, source = _shadow_targets(shadow, call)
    verdict = effective_decision(shadow.snapshot, call.subject, targets, blast_radius=blast_radius(tool, args))
    live_outcome = outcome_of(call.verdict, call.tool.name, live.approvals)
    shadow_outcome = outcome_of(verdict, call.tool.name, shadow.approvals)
    return ShadowDecision(
        call.tool.name, live_outcome, shadow_outcome, changes(live_outcome, shadow_outcome), source
    )


def shadow_record(shadow: ActivePolicy | None, live: ActivePolicy, call: LiveCall) -> ShadowDecision | None:
    """`decide_shadow`, or None without a shadow policy. A shadow that cannot decide the call
    (a tool whose targets raise) is logged and recorded as nothing: never a failed submission."""
    if shadow is None:
        return None
    try:
        return decide_shadow(shadow, live, call)
    except Exception as exc:  # the shadow is never enforced, not even by failing
        log.warning("shadow.decision_failed", tool=call.tool.name, version=shadow.version, error=str(exc))
        return None


def _shadow_targets(shadow: ActivePolicy, call: LiveCall) -> tuple[Tool, BaseModel, list[Target], str]:
    tool = find_tool(shadow.tools, call.tool.name)
    if tool is not None:
        try:
            args = tool.parse_args(call.raw_args)
        except (ValidationError, ToolArgumentsError):
            pass
        else:
            return tool, args, tool.targets(args), "shadow"
    return call.tool, call.args, call.targets, "live"
