"""Run one process tree with a wall-clock deadline and bounded output capture.

This is the part of the sandbox that does not depend on bubblewrap: the unsandboxed
development mode uses it as is. No `preexec_fn`: the outbox spawns commands from worker and API
threads, where code between fork and exec can deadlock; privilege dropping and the new session
are done by `subprocess` itself, resource limits by `prlimit` in the spawned argv.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# After the command exits (or is killed), how long to keep reading output that is still in
# the pipes. Survivors holding a pipe open are not waited for beyond this.
DRAIN_SECONDS = 2.0
_READ_CHUNK = 65536


@dataclass(frozen=True, slots=True)
class CapturedStream:
    """The first bytes of a stream (up to the requested keep) and how many were written."""

    data: bytes
    total_bytes: int


@dataclass(frozen=True, slots=True)
class CapturedRun:
    """How a process tree ended. `exit_code` follows the shell: 128+N when killed by signal N."""

    exit_code: int
    stdout: CapturedStream
    stderr: CapturedStream
    timed_out: bool
    duration_seconds: float


class _Sink:
    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._data = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        room = self._keep - len(self._data)
        if room > 0:
            self._data += chunk[:room]
        self.total += len(chunk)

    def result(self) -> CapturedStream:
        return CapturedStream(bytes(self._data), self.total)


def kill_process_group(pgid: int) -> None:
    """SIGKILL every process of a group; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def run_captured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    timeout_seconds: float,
    keep_bytes: int,
    pass_fds: Sequence[int] = (),
    run_as: tuple[int, int] | None = None,
) -> CapturedRun:
    """Spawn `argv` in a new session and supervise it until it exits or the deadline passes.

    At the deadline the whole process group is killed with SIGKILL. Under bubblewrap that group
    holds bwrap and the sandbox's init, whose death tears down the sandbox's pid namespace and
    with it every descendant, including those that started their own session.
    """
    identity: dict[str, Any] = {}
    if run_as is not None:
        identity = {"user": run_as[0], "group": run_as[1], "extra_groups": []}
    started = time.monotonic()
    with subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        pass_fds=tuple(pass_fds),
        start_new_session=True,
        **identity,
    ) as process:
        try:
            return _supervise(process, started, timeout_seconds, keep_bytes)
        finally:
            # The leader is not reaped yet (Popen.__exit__ waits), so its pid cannot have been
            # recycled into someone else's group id.
            kill_process_group(process.pid)


def _supervise(
    process: subprocess.Popen[bytes], started: float, timeout_seconds: float, keep_bytes: int
) -> CapturedRun:
    assert process.stdout is not None
    assert process.stderr is not None
    sinks = {process.stdout.fileno(): _Sink(keep_bytes), process.stderr.fileno(): _Sink(keep_bytes)}
    out_fd, err_fd = process.stdout.fileno(), process.stderr.fileno()
    exit_fd = os.pidfd_open(process.pid)
    selector = selectors.DefaultSelector()
    try:
        for fd in sinks:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        selector.register(exit_fd, selectors.EVENT_READ)
        deadline = started + timeout_seconds
        ended_at: float | None = None
        timed_out = False
        open_streams = set(sinks)
        while True:
            now = time.monotonic()
            if ended_at is None and now >= deadline:
                timed_out, ended_at = True, now
                kill_process_group(process.pid)
                selector.unregister(exit_fd)
            if ended_at is not None and (not open_streams or now >= ended_at + DRAIN_SECONDS):
                break
            wake_at = deadline if ended_at is None else ended_at + DRAIN_SECONDS
            for key, _ in selector.select(max(0.0, wake_at - now)):
                if key.fd == exit_fd:
                    ended_at = time.monotonic()
                    selector.unregister(exit_fd)
                    # Leftovers of the tree (only possible unsandboxed) must not outlive it.
                    kill_process_group(process.pid)
                    continue
                try:
                    chunk = os.read(key.fd, _READ_CHUNK)
                except BlockingIOError:
                    continue
                if chunk:
                    sinks[key.fd].feed(chunk)
                else:
                    selector.unregister(key.fd)
                    open_streams.discard(key.fd)
    finally:
        selector.close()
        os.close(exit_fd)
    status = process.wait()
    return CapturedRun(
        exit_code=128 - status if status < 0 else status,
        stdout=sinks[out_fd].result(),
        stderr=sinks[err_fd].result(),
        timed_out=timed_out,
        duration_seconds=round(ended_at - started, 6),
    )
