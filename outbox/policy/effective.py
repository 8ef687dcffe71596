"""A call's effective decision: what the pipeline does with it, in one place.

Policy decides per target (`engine.py`: deny beats approve beats allow). A tool may then send a
call that policy alone allows to a human anyway, when the call is over the tool's blast-radius
bound (`BlastRadiusBounded`, e.g. more namespaces than `approval_above_targets`). Submission
records this decision, the worker checks it again against the running policy before the tool
runs, and `outbox policy test` predicts it: all three call `effective_decision`, so a policy test
cannot pass a call the server treats otherwise.

Who may approve a call that needs a human is itself a policy decision, on act `APPROVE_ACT` for
each of the call's targets; `approvals/authority.py` asks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from outbox.policy.engine import Effect, PolicyDecision, PolicySnapshot, strictness
from outbox.policy.matching import Subject
from outbox.toolkit.base import BlastRadiusBounded, Target, Tool

# Every object can be approved: `p, user:…, <object>, approve, allow` says who may approve it.
APPROVE_ACT = "approve"


@dataclass(frozen=True, slots=True)
class EffectiveDecision:
    """Policy's decision and, for a call policy alone allows, why a human must approve it anyway."""

    policy: PolicyDecision
    escalation: str | None = None

    @property
    def effect(self) -> Effect:
        return "approve" if self.escalation else self.policy.effect

    @property
    def policy_version(self) -> str:
        return self.policy.policy_version

    def explain(self) -> str:
        """One sentence an agent (or an approver) can act on."""
        if self.escalation:
            return f"{self.escalation} (policy alone would allow it)"
        return self.policy.explain()

    def record(self) -> dict[str, Any]:
        """The decision as the action's audit events keep it."""
        return {
            "effect": self.effect,
            "policy_effect": self.policy.effect,
            "escalation": self.escalation,
            "policy_version": self.policy.policy_version,
            "targets": [
                {
                    "object": t.target.object,
                    "act": t.target.act,
                    "effect": t.effect,
                    "rule": t.rule.describe() if t.rule else None,
                }
                for t in self.policy.targets
            ],
        }


def blast_radius(tool: Tool, args: BaseModel) -> str | None:
    """Why `tool` sends this call to a human whatever policy says, or None (also for tools
    without a bound)."""
    return tool.approval_required_by_blast_radius(args) if isinstance(tool, BlastRadiusBounded) else None


def effective_decision(
    snapshot: PolicySnapshot, subject: Subject, targets: Sequence[Target], *, blast_radius: str | None
) -> EffectiveDecision:
    """The call's effect as the pipeline applies it: policy on every target, then the tool's
    blast-radius bound (`blast_radius(tool, args)`), which only ever makes an allow stricter."""
    decision = snapshot.decide(subject, targets)
    return EffectiveDecision(decision, blast_radius if decision.effect == "allow" else None)


def execution_refusal(now: EffectiveDecision, recorded_effect: str) -> str | None:
    """Why a queued call must not run under the running policy, or None.

    Policy is checked again at execution: a call denied now does not run, whatever it was at
    submission, and a call that now needs a human but was queued without one does not run
    either. A call recorded as needing approval runs only with a valid approval (checked by
    `approvals.service.verify_for_execution`), even if policy alone would now allow it.
    """
    if now.effect == "deny" or strictness(now.effect) > strictness(recorded_effect):
        return f"policy {now.policy_version} no longer allows this call: {now.explain()}"
    return None
