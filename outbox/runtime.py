"""Everything a process needs to serve or execute actions, built once per process."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from outbox.actions.callbacks import deliver_callback
from outbox.actions.ports import ApprovalRequests
from outbox.approvals.notifier import ApprovalNotifier
from outbox.approvals.port import ApprovalsPort
from outbox.config import Settings
from outbox.db import Database
from outbox.deliveries.results import KIND_CALLBACK
from outbox.deliveries.service import Handler
from outbox.policy.store import PolicyStore
from outbox.slack.notifier import SlackNotifier
from outbox.slack.sync import handle_slack_delivery
from outbox.toolkit.registry import ToolProvider, ToolServices
from outbox.tools.providers import BUILTIN_PROVIDERS


class Dispatcher(Protocol):
    """Carries wake-ups to workers. It is never the source of truth: losing a message is
    repaired by the sweeper, delivering one twice is harmless (claims are conditional)."""

    # False when a publication reaches no worker (the CLI): an action queued here is left marked
    # unpublished, so a running server's sweeper publishes it at once instead of after a while.
    reaches_workers: bool

    def publish(self, action_ids: list[str], *, backpressure: bool = False) -> None:
        """Wake workers for these actions. With `backpressure` (new submissions), a dispatcher
        whose workers are far behind may make the caller wait until they catch up."""
        ...

    def healthy(self) -> bool: ...


class NullDispatcher:
    """For processes that never publish (the CLI); the sweeper of a running server picks up."""

    reaches_workers = False

    def publish(self, action_ids: list[str], *, backpressure: bool = False) -> None:
        return None

    def healthy(self) -> bool:
        return True


@dataclass
class Runtime:
    settings: Settings
    db: Database
    policy: PolicyStore
    dispatcher: Dispatcher
    # The channels that make outbound deliveries, by family (the kind up to its first dot).
    delivery_handlers: Mapping[str, Handler]
    # Where approval requests are announced (Slack).
    approval_notifier: ApprovalNotifier
    # How submission opens and cancellation closes approval requests (actions sit below approvals).
    approvals: ApprovalRequests
    # Whether the periodic sweep makes the due deliveries itself (the embedded server); with a
    # broker, the `outbox.deliver_notifications` task that follows each sweep makes them.
    sweep_delivers: bool

    @classmethod
    def build(
        cls,
        settings: Settings,
        dispatcher: Dispatcher | None = None,
        *,
        providers: Sequence[ToolProvider] = BUILTIN_PROVIDERS,
    ) -> Runtime:
        db = Database(settings)
        policy = PolicyStore(settings.policy_dir, ToolServices(settings=settings, db=db), providers)
        return cls(
            settings=settings,
            db=db,
            policy=policy,
            dispatcher=dispatcher or NullDispatcher(),
            delivery_handlers={"slack": handle_slack_delivery, KIND_CALLBACK: deliver_callback},
            approval_notifier=SlackNotifier(settings),
            approvals=ApprovalsPort(),
            sweep_delivers=settings.is_embedded,
        )
