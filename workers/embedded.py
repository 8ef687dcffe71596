"""The embedded worker: the same execution and sweeping code as Celery, on threads inside the
API process, with an in-memory queue instead of a broker server.

The queue only carries wake-ups. If the process dies, the database still holds every action and
the sweeper of the next start re-publishes whatever was queued or running.
"""

from __future__ import annotations

import queue
import threading

import structlog

from outbox.audit.checkpointer import Checkpointer, run_checkpointer
from outbox.db import draining
from outbox.execution.service import run_action
from outbox.execution.sweeper import sweep_once
from outbox.runtime import Runtime

log = structlog.get_logger(__name__)


class EmbeddedDispatcher:
    reaches_workers = True

    def __init__(self) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def publish(self, action_ids: list[str]) -> None:
        for action_id in action_ids:
            self._queue.put(action_id)

    def healthy(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def start(self, runtime: Runtime) -> None:
        for n in range(runtime.settings.embedded_worker_threads):
            self._spawn(f"outbox-worker-{n}", self._work, runtime)
        self._spawn("outbox-sweeper", self._sweep, runtime)
        self._spawn("outbox-audit-checkpointer", self._checkpoint, runtime)

    def _spawn(self, name: str, target: object, runtime: Runtime) -> None:
        thread = threading.Thread(target=target, args=(runtime,), name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _work(self, runtime: Runtime) -> None:
        # This thread drains the queue: its writes go before new submissions' (db.WriterQueue).
        with draining():
            self._drain(runtime)

    def _drain(self, runtime: Runtime) -> None:
        while not self._stop.is_set():
            try:
                action_id = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                run_action(runtime, action_id)
            except Exception:
                # The lease will expire and the sweeper will re-drive the action.
                log.exception("worker.failed", action_id=action_id)

    def _sweep(self, runtime: Runtime) -> None:
        while not self._stop.wait(runtime.settings.sweep_interval_seconds):
            try:
                sweep_once(runtime)
            except Exception:
                log.exception("sweeper.failed")

    def _checkpoint(self, runtime: Runtime) -> None:
        # Signed checkpoints of the audit chain's head, about a second after events commit.
        try:
            checkpointer = Checkpointer.from_settings(runtime.settings, runtime.db)
        except Exception:
            log.exception("audit.checkpointer_failed")
            return
        run_checkpointer(checkpointer, runtime.settings.audit_checkpoint_interval_seconds, self._stop)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
