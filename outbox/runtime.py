"""Everything a process needs to serve or execute actions, built once per process."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
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
    # The shadow policy (OUTBOX_SHADOW_POLICY_DIR, docs/shadow-policy.md): decides every
    # submission a second time, recorded and never enforced. None when not configured.
    shadow_policy: PolicyStore | None = None

    @property
    def policy_stores(self) -> tuple[PolicyStore, ...]:
        """The stores reloaded together (file watch, SIGHUP): the policy, then its shadow."""
        return (self.policy,) if self.shadow_policy is None else (self.policy, self.shadow_policy)

    def reload_policies(self) -> None:
        """SIGHUP: reload the policy and the shadow; each keeps its running version on failure."""
        for store in self.policy_stores:
            store.reload()

    def watch_policies(self, stop: threading.Event) -> None:
        for store in self.policy_stores:
            store.watch(stop)

    @classmethod
    def build(
        cls,
        settings: Settings,
        dispatcher: Dispatcher | None = None,
        *,
        providers: Sequence[ToolProvider] = BUILTIN_PROVIDERS,
        decides_submissions: bool = True,
    ) -> Runtime:
        """`decides_submissions`: false for processes that never receive a call (Celery workers,
        CLI commands), which then do not load the shadow policy, which decides only submissions."""
        db = Database(settings)
        services = ToolServices(settings=settings, db=db)
        policy = PolicyStore(settings.policy_dir, services, providers)
        shadow_dir = settings.shadow_policy_dir if decides_submissions else None
        shadow = _shadow_store(shadow_dir, services, providers)
        return cls(
            settings=settings,
            db=db,
            policy=policy,
            dispatcher=dispatcher or NullDispatcher(),
            delivery_handlers={"slack": handle_slack_delivery, KIND_CALLBACK: deliver_callback},
            approval_notifier=SlackNotifier(settings),
            approvals=ApprovalsPort(),
            sweep_delivers=settings.is_embedded,
            shadow_policy=shadow,
        )


class ShadowPolicyInvalid(Exception):
    """The shadow policy directory did not load at start: the process refuses to start, as it
    does for a broken policy (a shadow that silently decided nothing would be mistaken for one
    that agrees). The message is one line."""


def _shadow_store(
    directory: Path | None, services: ToolServices, providers: Sequence[ToolProvider]
) -> PolicyStore | None:
    if directory is None:
        return None
    try:
        return PolicyStore(directory, services, providers)
    except Exception as exc:  # any load failure: refuse to start, naming the shadow
        raise ShadowPolicyInvalid(f"the shadow policy {directory} did not load: {exc}") from exc
