"""The running policy: loaded once, swapped atomically on reload.

A reload builds a complete new `ActivePolicy` (rules and tools) off to the side and replaces
the reference in one assignment, so a decision sees either the old policy or the new one, never
a mix. A load that fails keeps the previous policy and is reported.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog
from watchfiles import watch

from outbox.policy.approval_gates import ApprovalsConfig, load_approvals_config
from outbox.policy.engine import PolicySnapshot, content_version, load_policy
from outbox.sqltypes import utcnow
from outbox.toolkit.base import Tool
from outbox.toolkit.registry import ToolProvider, ToolServices, load_tools

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ActivePolicy:
    snapshot: PolicySnapshot
    tools: Mapping[str, Tool]
    # The approval gates (policies/approvals.yaml) of this very version.
    approvals: ApprovalsConfig

    @property
    def version(self) -> str:
        return self.snapshot.version


@dataclass(frozen=True)
class ReloadFailure:
    at: datetime
    error: str


@dataclass(frozen=True)
class PolicyInfo:
    """What a server reports about its running policy (`GET /v1/policy`, the info metric)."""

    version: str
    git_commit: str | None
    loaded_at: datetime
    directory: str
    rules: int
    indexed: bool
    tools: tuple[str, ...]
    last_failure: ReloadFailure | None


# A load races with an editor or a `git checkout` writing the files. Rules and version come from
# one read, but tools read their own files: when the directory changed during the load, load again.
_CONSISTENT_LOAD_ATTEMPTS = 3


class PolicyStore:
    def __init__(self, directory: Path, services: ToolServices, providers: Sequence[ToolProvider]) -> None:
        self.directory = directory
        self.services = services
        # Handed in by the composition root: the policy engine knows no tool.
        self.providers = providers
        self._lock = threading.Lock()
        self._current = self._load()
        self.last_failure: ReloadFailure | None = None

    def _load(self) -> ActivePolicy:
        for _attempt in range(_CONSISTENT_LOAD_ATTEMPTS):
            snapshot = load_policy(self.directory)
            tools = load_tools(snapshot.directory, self.services, self.providers)
            # approvals.yaml is part of the policy: a broken one fails the load like a broken rule.
            approvals = load_approvals_config(snapshot.directory)
            if content_version(snapshot.directory) == snapshot.version:
                break
        return ActivePolicy(snapshot, tools, approvals)

    @property
    def current(self) -> ActivePolicy:
        return self._current

    def info(self) -> PolicyInfo:
        """The running version and when it was loaded, from one consistent reference."""
        active = self._current
        snapshot = active.snapshot
        return PolicyInfo(
            version=snapshot.version,
            git_commit=snapshot.git_commit,
            loaded_at=snapshot.loaded_at,
            directory=str(snapshot.directory),
            rules=len(snapshot.rules),
            indexed=snapshot.indexed,
            tools=tuple(active.tools),
            last_failure=self.last_failure,
        )

    def reload(self) -> tuple[bool, str]:
        """Load the directory again; on failure keep the running policy. Returns (ok, message)."""
        with self._lock:
            try:
                fresh = self._load()
            except Exception as exc:  # any failure must leave the running policy in place
                self.last_failure = ReloadFailure(utcnow(), str(exc))
                log.error("policy.reload_failed", error=str(exc), kept_version=self._current.version)
                return False, str(exc)
            previous = self._current.version
            self._current = fresh
            self.last_failure = None
            if fresh.version != previous:
                log.info("policy.reloaded", version=fresh.version, previous=previous)
            return True, fresh.version

    def watch(self, stop: threading.Event) -> threading.Thread:
        """Reload when a file in the policy directory changes."""

        def run() -> None:
            for _changes in watch(self.directory, stop_event=stop, raise_interrupt=False):
                self.reload()

        thread = threading.Thread(target=run, name="policy-watch", daemon=True)
        thread.start()
        return thread
