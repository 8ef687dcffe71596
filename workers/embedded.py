"""The embedded worker: the same execution and sweeping code as Celery, on threads inside the
API process, with an in-memory queue instead of a broker server.

The queue only carries wake-ups. If the process dies, the database still holds every action and
the sweeper of the next start re-publishes whatever was queued or running.
"""

from __future__ import annotations

import queue
import threading
import time

import structlog

from outbox.audit.checkpointer import Checkpointer, run_checkpointer
from outbox.db import draining
from outbox.execution.service import run_action
from outbox.execution.sweeper import sweep_once
from outbox.runtime import Runtime

log = structlog.get_logger(__name__)


class EmbeddedDispatcher:
    reaches_workers = True

    # How long a submission's answer waits for room at most: a stuck worker must not hold
    # every request; the action is committed either way.
    MAX_BACKPRESSURE_WAIT = 30.0

    def __init__(self, bound: int | None = None) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._room = threading.Condition()
        self._room_waiters = 0
        # Taken from the settings at start unless given here.
        self._bound = bound

    def publish(self, action_ids: list[str], *, backpressure: bool = False) -> None:
        for action_id in action_ids:
            self._queue.put(action_id)
        if backpressure:
            self._wait_for_room()

    def _wait_for_room(self) -> None:
        """Backpressure: while more actions wait for a worker thread than the bound, the
        submission's answer waits too. Load from clients that wait for their answers (agents do)
        then slows to the rate the workers execute, and the queue stays bounded. The sweeper
        never waits here: it publishes without backpressure."""
        bound = self._bound
        # Not started (no workers to wait for), or room already: the common case takes no lock.
        if bound is None or self._queue.qsize() <= bound:
            return
        deadline = time.monotonic() + self.MAX_BACKPRESSURE_WAIT
        with self._room:
            self._room_waiters += 1
            try:
                while self._queue.qsize() > bound and not self._stop.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    # Short waits: a worker reads `_room_waiters` without the lock, so a wake-up
                    # may be missed; the next check comes soon anyway.
                    self._room.wait(min(remaining, 0.05))
            finally:
                self._room_waiters -= 1

    def _took_one(self) -> None:
        if self._room_waiters:  # most of the time nobody waits: no lock, no notify
            with self._room:
                self._room.notify()

    def healthy(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def start(self, runtime: Runtime) -> None:
        if self._bound is None:
            self._bound = runtime.settings.embedded_queue_bound
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
            self._took_one()
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
        with self._room:
            self._room.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
