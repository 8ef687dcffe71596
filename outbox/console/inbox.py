"""Which pending approval requests wait for one person's decision.

The approvals service has no query for "pending requests this identity may decide", so the inbox
asks it one request at a time: `list_approvals` for the pending requests, then
`check_may_decide` — the same read-only check that opens a Slack form — for each one the person
has not decided yet. No rule of who may approve is written here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from outbox.approvals.authority import ApprovalRefused, person_of
from outbox.approvals.schemas import ApprovalOut
from outbox.approvals.service import check_may_decide, list_approvals
from outbox.sqltypes import utcnow

if TYPE_CHECKING:
    from outbox.runtime import Runtime

# More pending requests than this at once is an incident, not an inbox; the page says so.
INBOX_SCAN_LIMIT = 200


@dataclass(frozen=True)
class Inbox:
    # Requests this person may decide and has not, oldest first.
    awaiting: list[ApprovalOut]
    # Requests this person approved that still wait for another approver, oldest first.
    waiting_for_others: list[ApprovalOut]
    # Whether there were more pending requests than the scan looked at (the newest `scanned`).
    truncated: bool
    scanned: int = INBOX_SCAN_LIMIT


def inbox_for(runtime: Runtime, identity: str) -> Inbox:
    """The pending requests awaiting `identity` (a canonical `user:…` identity)."""
    with runtime.db.session() as session:
        pending = list_approvals(session, status="pending", limit=INBOX_SCAN_LIMIT)
    me = person_of(runtime.policy.current.snapshot, identity)
    now = utcnow()
    awaiting: list[ApprovalOut] = []
    waiting: list[ApprovalOut] = []
    for approval in sorted(pending, key=lambda a: a.created_at):
        if approval.expires_at <= now:
            continue  # the sweeper marks it expired; nobody can decide it any more
        if any(decision.approver in me for decision in approval.decisions):
            if any(d.approver in me and d.verdict == "approve" for d in approval.decisions):
                waiting.append(approval)
            continue
        try:
            # `approve`: the person the call is made for is never asked (they could only deny).
            awaiting.append(check_may_decide(runtime, approval.id, identity, "approve"))
        except ApprovalRefused:
            continue
    return Inbox(awaiting=awaiting, waiting_for_others=waiting, truncated=len(pending) >= INBOX_SCAN_LIMIT)
