"""Real server processes for end-to-end tests: `outbox serve`, `outbox worker`, `outbox beat`."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

OUTBOX = [sys.executable, "-m", "outbox.cli.main"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def outbox_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    env.update({"OUTBOX_LOG_JSON": "false", "OUTBOX_LOG_LEVEL": "WARNING", "OUTBOX_POLICY_WATCH": "false"})
    # `outbox serve` refuses to start when its mail sink's port is taken: never the machine's 2525.
    env["OUTBOX_MAIL_SINK_PORT"] = str(free_port())
    env.update(values)
    return env


def start(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start a process in its own session, so that killing it kills its children too."""
    with log.open("ab") as handle:
        return subprocess.Popen(
            [*OUTBOX, *args], env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        [*OUTBOX, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def wait_ready(base_url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server not ready after {timeout}s:\n{log.read_text()[-4000:]}")


def kill(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Kill the process and everything it started (Celery's prefork children)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def stop(process: subprocess.Popen[bytes]) -> None:
    kill(process, signal.SIGTERM)


def wait_until(predicate: object, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False
