"""The shadow policy's disagreements with the live one, read from the recorded actions.

Each action submitted while a shadow policy was configured keeps the shadow's decision
(`actions.shadow`, docs/shadow-policy.md). This module reads them for a time window and sums
them up: how many calls the shadow decided, how many it would have decided otherwise (per change
kind, tool and agent), and which. `outbox policy shadow report` and the console's Shadow page
show the same `ShadowReport`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from outbox.actions.models import Action
from outbox.agents.models import Agent
from outbox.policy.counterfactual import Outcome


@dataclass(frozen=True, slots=True)
class ShadowedCall:
    """One action the shadow decided: both outcomes and how they differ (none when it agreed)."""

    action_id: str
    created_at: datetime
    agent: str
    tool: str
    live: Outcome
    shadow: Outcome
    changes: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        return {
            "action_id": self.action_id,
            "created_at": self.created_at.isoformat(),
            "agent": self.agent,
            "tool": self.tool,
            "changes": list(self.changes),
            "live": self.live.record(),
            "shadow": self.shadow.record(),
        }


@dataclass
class ShadowReport:
    """Totals first (decided and disagreeing, per change kind, tool and agent), then the actions."""

    since: datetime | None
    until: datetime | None
    decided: int = 0
    by_change: Counter[str] = field(default_factory=Counter)
    # (decided, disagreeing) per tool and per agent.
    by_tool: dict[str, list[int]] = field(default_factory=dict)
    by_agent: dict[str, list[int]] = field(default_factory=dict)
    disagreements: list[ShadowedCall] = field(default_factory=list)
    shadow_versions: Counter[str] = field(default_factory=Counter)

    def add(self, row: ShadowedCall) -> None:
        self.decided += 1
        self.shadow_versions[row.shadow.policy_version] += 1
        for totals in (self.by_tool.setdefault(row.tool, [0, 0]), self.by_agent.setdefault(row.agent, [0, 0])):
            totals[0] += 1
            totals[1] += bool(row.changes)
        if row.changes:
            self.by_change.update(row.changes)
            self.disagreements.append(row)

    def record(self) -> dict[str, Any]:
        """JSON-ready (`--format json`)."""
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "decided": self.decided,
            "disagreeing": len(self.disagreements),
            "shadow_versions": dict(self.shadow_versions),
            "by_change": dict(sorted(self.by_change.items())),
            "by_tool": {k: {"decided": v[0], "disagreeing": v[1]} for k, v in sorted(self.by_tool.items())},
            "by_agent": {k: {"decided": v[0], "disagreeing": v[1]} for k, v in sorted(self.by_agent.items())},
            "disagreements": [row.record() for row in self.disagreements],
        }


def shadow_report(session: Session, *, since: datetime | None = None, until: datetime | None = None) -> ShadowReport:
    """Every action with a shadow decision created in [since, until), oldest first."""
    report = ShadowReport(since, until)
    for row in _shadow_rows(session, since, until):
        report.add(row)
    return report


def _shadow_rows(session: Session, since: datetime | None, until: datetime | None) -> Iterable[ShadowedCall]:
    query = (
        select(
            col(Action.id),
            col(Action.created_at),
            col(Agent.name),
            col(Action.tool),
            col(Action.decision_effect),
            col(Action.decision_rules),
            col(Action.policy_version),
            col(Action.shadow),
        )
        .join(Agent, col(Agent.id) == col(Action.agent_id))
        .where(col(Action.shadow).is_not(None))
        .order_by(col(Action.created_at), col(Action.id))
    )
    if since is not None:
        query = query.where(col(Action.created_at) >= since)
    if until is not None:
        query = query.where(col(Action.created_at) < until)
    for action_id, created_at, agent, tool, effect, rules, version, shadow in session.execute(query):
        # JSON null is stored as SQL NULL by the column type, but a shadow that could not decide
        # has no outcome: it is not a decision to compare.
        if not isinstance(shadow, dict) or "outcome" not in shadow:
            continue
        live = shadow.get("live")
        live_outcome = (
            Outcome.from_record(live)
            if isinstance(live, dict)
            else Outcome(effect, version, tuple(str(r.get("rule")) for r in rules or () if isinstance(r, dict)))
        )
        changes = tuple(str(kind) for kind in shadow.get("changes") or ())
        yield ShadowedCall(
            action_id, created_at, agent, tool, live_outcome, Outcome.from_record(shadow["outcome"]), changes
        )
