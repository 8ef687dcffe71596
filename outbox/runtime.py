"""Everything a process needs to serve or execute actions, built once per process."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from outbox.config import Settings
from outbox.db import Database
from outbox.policy.store import PolicyStore
from outbox.toolkit.registry import ToolProvider, ToolServices
from outbox.tools.providers import BUILTIN_PROVIDERS


class Dispatcher(Protocol):
    """Carries wake-ups to workers. It is never the source of truth: losing a message is
    repaired by the sweeper, delivering one twice is harmless (claims are conditional)."""

    def publish(self, action_ids: list[str]) -> None: ...

    def healthy(self) -> bool: ...


class NullDispatcher:
    """For processes that never publish (the CLI); the sweeper of a running server picks up."""

    def publish(self, action_ids: list[str]) -> None:
        return None

    def healthy(self) -> bool:
        return True


@dataclass
class Runtime:
    settings: Settings
    db: Database
    policy: PolicyStore
    dispatcher: Dispatcher

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
        return cls(settings=settings, db=db, policy=policy, dispatcher=dispatcher or NullDispatcher())
