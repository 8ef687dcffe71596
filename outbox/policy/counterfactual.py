"""What would have happened under another policy: one call's outcome, and how two outcomes differ.

Three questions compare a decision that was made with one that another policy makes: `outbox
policy replay` (recorded traffic against a candidate directory), the shadow policy (every live
submission decided a second time, never enforced), and the replay twin's report. All three
describe an outcome with `Outcome` and name its changes with `changes`, so a disagreement means
the same thing in the action, the audit event, the metrics and every report.

An outcome is what the pipeline would do with the call, not only policy's effect: the effective
effect (policy, then the tool's blast-radius bound), the rules that decided it, for a call sent to
a human the gate it would get (quorum and expiry, `approvals.yaml`), and for mail whether a send
window or budget would hold it back (`deferred`, the reason).
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

from outbox.policy.approval_gates import ApprovalsConfig
from outbox.policy.effective import EffectiveDecision


class ChangeKind(enum.StrEnum):
    """How an outcome changed. The effect changes read `<before>-to-<after>`."""

    ALLOW_TO_DENY = "allow-to-deny"
    ALLOW_TO_APPROVE = "allow-to-approve"
    DENY_TO_ALLOW = "deny-to-allow"
    DENY_TO_APPROVE = "deny-to-approve"
    APPROVE_TO_ALLOW = "approve-to-allow"
    APPROVE_TO_DENY = "approve-to-deny"
    # Still sent to a human, but to another gate: a different quorum or expiry.
    GATE_CHANGED = "gate-changed"
    # Mail: a send window or budget would now hold the call back, or no longer would.
    NOW_DEFERRED = "now-deferred"
    NO_LONGER_DEFERRED = "no-longer-deferred"
    # The other policy would refuse the call as invalid before deciding it (a tool it does not
    # define, or arguments its definition no longer accepts): the agent would get a 422.
    NOW_REFUSED = "now-refused"

    @property
    def loosens(self) -> bool:
        """True when the change lets through what was stopped or held (a wider grant)."""
        return self in _LOOSENING


_LOOSENING = frozenset(
    {ChangeKind.DENY_TO_ALLOW, ChangeKind.DENY_TO_APPROVE, ChangeKind.APPROVE_TO_ALLOW, ChangeKind.NO_LONGER_DEFERRED}
)


# The effect of an outcome whose call the policy would refuse as invalid, never deciding it.
REFUSED_EFFECT = "refused"


class Outcome(NamedTuple):
    """One call's outcome under one policy version. (A named tuple, not a dataclass: a submission
    builds two with a shadow policy, and a tuple is built in a third of the time.)"""

    effect: str
    policy_version: str
    # The rules that decided it, as written (`p, role:…, …`), in the order policy reports them.
    rules: tuple[str, ...] = ()
    escalation: str | None = None
    # For `approve`: the gate the approval request gets.
    quorum: int | None = None
    expires_in_seconds: int | None = None
    # Mail held back by a send window or a budget: why. None when it would go at once.
    deferred: str | None = None

    def record(self) -> dict[str, Any]:
        """JSON-ready, as actions, audit events and reports keep it."""
        record: dict[str, Any] = {
            "effect": self.effect,
            "policy_version": self.policy_version,
            "rules": list(self.rules),
            "escalation": self.escalation,
            "quorum": self.quorum,
            "expires_in_seconds": self.expires_in_seconds,
            "deferred": self.deferred,
        }
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Outcome:
        return cls(
            effect=str(record["effect"]),
            policy_version=str(record.get("policy_version") or ""),
            rules=tuple(str(rule) for rule in record.get("rules") or ()),
            escalation=record.get("escalation"),
            quorum=record.get("quorum"),
            expires_in_seconds=record.get("expires_in_seconds"),
            deferred=record.get("deferred"),
        )

    def describe(self) -> str:
        """A short phrase for tables: `approve (quorum 2)`, `deny by p, role:…`."""
        text = self.effect
        if self.effect == "approve" and self.quorum is not None:
            text += f" (quorum {self.quorum})"
        if self.deferred:
            text += f", deferred: {self.deferred}"
        return text


def outcome_of(verdict: EffectiveDecision, tool: str, approvals: ApprovalsConfig | None) -> Outcome:
    """The outcome of an effective decision; `approvals` (the same policy version's gates) gives
    the gate of a call sent to a human."""
    quorum = expires = None
    if verdict.effect == "approve" and approvals is not None:
        gate = approvals.resolve(tool, verdict.policy)
        quorum, expires = gate.quorum, int(gate.expires_in.total_seconds())
    # The deciding rules' texts, each once, in order (what `PolicyDecision.rules()` lists, without
    # building its dictionaries: this runs twice per submission with a shadow policy).
    rules = tuple(dict.fromkeys(t.rule.text for t in verdict.policy.deciding if t.rule is not None))
    return Outcome(verdict.effect, verdict.policy_version, rules, verdict.escalation, quorum, expires)


def changes(before: Outcome, after: Outcome) -> tuple[ChangeKind, ...]:
    """How `after` differs from `before`, as change kinds; empty when the outcome is the same.

    Which rule decided is not a change of outcome: a call allowed by another rule is still
    allowed. A gate is compared only when both sides send the call to a human and both know it;
    a deferral only when the call would be let through on both sides."""
    if REFUSED_EFFECT in (before.effect, after.effect):
        # Nothing was decided on a refused side: no effect, gate or deferral to compare. (A
        # recorded call was never refused: a refused call is answered 422 and not recorded.)
        refused_now = after.effect == REFUSED_EFFECT and before.effect != REFUSED_EFFECT
        return (ChangeKind.NOW_REFUSED,) if refused_now else ()
    found: list[ChangeKind] = []
    if before.effect != after.effect:
        found.append(ChangeKind(f"{before.effect}-to-{after.effect}"))
    elif before.effect == "approve" and _gate_differs(before, after):
        found.append(ChangeKind.GATE_CHANGED)
    if before.effect != "deny" and after.effect != "deny":
        if before.deferred is None and after.deferred is not None:
            found.append(ChangeKind.NOW_DEFERRED)
        elif before.deferred is not None and after.deferred is None:
            found.append(ChangeKind.NO_LONGER_DEFERRED)
    return tuple(found)


def _gate_differs(before: Outcome, after: Outcome) -> bool:
    pairs = ((before.quorum, after.quorum), (before.expires_in_seconds, after.expires_in_seconds))
    return any(a is not None and b is not None and a != b for a, b in pairs)


def parse_change_kinds(text: str) -> frozenset[ChangeKind]:
    """`deny-to-allow,allow-to-deny` (as `--fail-on` takes it); `any` is every kind, `loosening`
    every kind that lets through what was stopped. Raises ValueError naming the unknown ones."""
    kinds: set[ChangeKind] = set()
    unknown: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part == "any":
            kinds.update(ChangeKind)
        elif part == "loosening":
            kinds.update(_LOOSENING)
        elif part in ChangeKind._value2member_map_:
            kinds.add(ChangeKind(part))
        else:
            unknown.append(part)
    if unknown:
        choices = ", ".join(["any", "loosening", *(k.value for k in ChangeKind)])
        raise ValueError(f"unknown change kind(s) {', '.join(unknown)}: use {choices}")
    return frozenset(kinds)
