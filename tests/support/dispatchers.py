"""Dispatchers for tests that drive execution by hand."""

from __future__ import annotations

import threading


class RecordingDispatcher:
    """Remembers what was published; tests then run actions themselves."""

    reaches_workers = True

    def __init__(self) -> None:
        self.published: list[str] = []
        self._lock = threading.Lock()

    def publish(self, action_ids: list[str], *, backpressure: bool = False) -> None:
        with self._lock:
            self.published.extend(action_ids)

    def healthy(self) -> bool:
        return True
