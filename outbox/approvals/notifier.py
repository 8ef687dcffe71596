"""Where approval requests are announced, as the approvals domain sees it.

The composition root (`Runtime.build`) wires the implementation: Slack's lives in
`outbox/slack/notifier.py`, an edge above this package, so approvals never imports it.
"""

from __future__ import annotations

from typing import Protocol

from sqlmodel import Session


class ApprovalNotifier(Protocol):
    def enabled(self) -> bool:
        """Whether requests are posted at all (a request then records the channel it goes to)."""
        ...

    def sweep(self, session: Session) -> None:
        """The notifier's part of the periodic sweep, in the sweep's transaction."""
        ...
