"""The shadow policy's decision on a submission: made, recorded, counted, never enforced.

Every submission is decided a second time by the shadow policy (`OUTBOX_SHADOW_POLICY_DIR`,
docs/shadow-policy.md): the same subject, the shadow's own tool definition for the targets and the
blast-radius bound, the shadow's rules and its approvals.yaml gate. A call the shadow would refuse
as invalid (it defines no such tool, or its definition refuses the arguments) is recorded as
refused (`now-refused`), as `outbox policy replay` reports it: the agent would get a 422 there.
Both outcomes are described by `outbox.policy.counterfactual`, so a disagreement here means what
it means in `outbox policy replay`. The result is recorded on the action (`shadow`) and in its
`action.received` event, in the same transaction as the action; nothing here changes what the
live decision does. A call that no changed line of the shadow can touch is not decided twice: its
outcome is the live one (`shadow_outcome`, `outbox.policy.delta`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import BaseModel

from outbox import metrics
from outbox.policy.counterfactual import REFUSED_EFFECT, ChangeKind, Outcome, changes, outcome_of
from outbox.policy.delta import delta_between
from outbox.policy.effective import EffectiveDecision, blast_radius, effective_decision
from outbox.policy.matching import Subject
from outbox.policy.store import ActivePolicy
from outbox.toolkit.base import Target, Tool
from outbox.toolkit.registry import parse_in

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LiveCall:
    """What the live pipeline decided, and from what: the shadow decides the same call."""

    subject: Subject
    tool: Tool
    raw_args: dict[str, Any]
    args: BaseModel
    verdict: EffectiveDecision


@dataclass(frozen=True, slots=True)
class ShadowDecision:
    """The shadow's outcome next to the live one, and how they differ."""

    tool: str
    live: Outcome
    outcome: Outcome
    changes: tuple[ChangeKind, ...]
    # Why the shadow would refuse the call as invalid, or None when it decided it.
    refused: str | None = None

    def record(self) -> dict[str, Any]:
        """The action's `shadow` column and the `shadow` key of its `action.received` event."""
        return {
            "outcome": self.outcome.record(),
            "changes": [kind.value for kind in self.changes],
            "policy_version": self.outcome.policy_version,
            "live": self.live.record(),
            "refused": self.refused,
        }

    def count(self) -> None:
        """Count the decision and its disagreements (after the submission committed)."""
        metrics.record_shadow_decision(self.tool, [kind.value for kind in self.changes])


def decide_shadow(shadow: ActivePolicy, live: ActivePolicy, call: LiveCall) -> ShadowDecision:
    """The shadow's decision on a call the live policy decided (see the module docstring)."""
    live_outcome = outcome_of(call.verdict, call.tool.name, live.approvals)
    refusal: list[str] = []

    def decide_in_shadow() -> Outcome:
        parsed = parse_in(shadow.tools, call.tool.name, call.raw_args)
        if isinstance(parsed, str):
            refusal.append(parsed)
            return Outcome(REFUSED_EFFECT, shadow.version)
        tool, args = parsed
        verdict = effective_decision(
            shadow.snapshot, call.subject, tool.targets(args), blast_radius=blast_radius(tool, args)
        )
        return outcome_of(verdict, call.tool.name, shadow.approvals)

    targets = [decided.target for decided in call.verdict.policy.targets]
    outcome = shadow_outcome(shadow, live, call.subject, targets, live_outcome, decide_in_shadow)
    refused = refusal[0] if refusal else None
    return ShadowDecision(call.tool.name, live_outcome, outcome, changes(live_outcome, outcome), refused)


def shadow_outcome(
    shadow: ActivePolicy,
    live: ActivePolicy,
    subject: Subject,
    targets: Sequence[Target],
    live_outcome: Outcome,
    decide_in_shadow: Callable[[], Outcome],
) -> Outcome:
    """The shadow's outcome: the live one (under the shadow's version) when no rule that differs
    between the two can match this call and nothing else differs (`outbox.policy.delta`), else
    `decide_in_shadow()`. Most calls under a trial change touch none of its lines, so they cost a
    lookup in an index of the changed rules instead of a second decision."""
    if delta_between(live.snapshot, shadow.snapshot).may_differ(subject, targets):
        return decide_in_shadow()
    return live_outcome._replace(policy_version=shadow.version)


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
