"""The Shadow page: where the shadow policy (docs/shadow-policy.md) would have decided otherwise.

The same `ShadowReport` as `outbox policy shadow report`, for a window (the last 7 days unless
the form says otherwise), with the running shadow's version and reload state. Operators only: the
shadow's decisions are never shown to agents, and the API shows them to the admin token only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from outbox.policy.store import PolicyInfo
from outbox.policytools.shadow import ShadowedCall, ShadowReport, shadow_report
from outbox.runtime import Runtime

DEFAULT_WINDOW = timedelta(days=7)
# The page lists the newest disagreements up to this many; the totals count them all, and the
# CLI report lists every one.
SHOWN_DISAGREEMENTS = 200


@dataclass(frozen=True)
class ShadowView:
    report: ShadowReport
    # The running shadow policy, or None when this server has none configured.
    info: PolicyInfo | None
    shown: list[ShadowedCall]

    @property
    def truncated(self) -> bool:
        return len(self.shown) < len(self.report.disagreements)


def shadow_view(runtime: Runtime, since: datetime, until: datetime | None) -> ShadowView:
    with runtime.db.read_session() as session:
        report = shadow_report(session, since=since, until=until)
    info = runtime.shadow_policy.info() if runtime.shadow_policy is not None else None
    newest = list(reversed(report.disagreements))[:SHOWN_DISAGREEMENTS]
    return ShadowView(report, info, newest)
