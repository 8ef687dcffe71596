"""`outbox users passwd` on a terminal: the password is prompted for twice, hidden, and asked
again until it is acceptable. Run as a real process on a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

from outbox.runtime import Runtime
from outbox.users.service import add_user, sign_in
from tests.users.conftest import PASSWORD

OUTBOX = Path(sys.executable).with_name("outbox")


class Terminal:
    """A child process whose stdin, stdout and stderr are one pseudo-terminal."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.seen = ""
        self.transcript = ""

    def expect(self, text: str, timeout: float = 30.0) -> None:
        while text not in self.seen:
            ready, _, _ = select.select([self.master], [], [], timeout)
            assert ready, f"waited for {text!r}; the terminal shows {self.seen!r}"
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # the child closed the terminal
                chunk = b""
            assert chunk, f"waited for {text!r}; the process ended showing {self.seen!r}"
            self.seen += chunk.decode(errors="replace")
            self.transcript += chunk.decode(errors="replace")
        self.seen = self.seen[self.seen.index(text) + len(text) :]

    def type_hidden(self, line: str) -> None:
        """Type once the prompt has turned echo off: getpass flushes what was typed before."""
        deadline = time.monotonic() + 30
        while termios.tcgetattr(self.master)[3] & termios.ECHO:
            assert time.monotonic() < deadline, "the prompt never turned echo off"
            time.sleep(0.01)
        os.write(self.master, line.encode() + b"\n")

    def finish(self) -> int:
        while True:
            ready, _, _ = select.select([self.master], [], [], 30)
            try:
                chunk = os.read(self.master, 4096) if ready else b""
            except OSError:
                chunk = b""
            if not chunk:
                break
            self.seen += chunk.decode(errors="replace")
        code = self.process.wait(timeout=30)
        os.close(self.master)
        return code


def _env(runtime: Runtime) -> dict[str, str]:
    settings = runtime.settings
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "OUTBOX_DATABASE_URL": settings.database_url,
        "OUTBOX_POLICY_DIR": str(settings.policy_dir),
        "OUTBOX_DATA_DIR": str(settings.data_dir),
        "OUTBOX_LOG_JSON": "false",
        "OUTBOX_LOG_LEVEL": "WARNING",
        "OUTBOX_POLICY_WATCH": "false",
    }


def test_passwd_on_a_terminal_prompts_twice_and_again_until_acceptable(runtime: Runtime) -> None:
    add_user(runtime.db, "ada@example.com", actor="test")
    terminal = Terminal([str(OUTBOX), "users", "passwd", "ada@example.com"], _env(runtime))

    terminal.expect("New password:")
    terminal.type_hidden("too short")
    terminal.expect("Repeat for confirmation:")
    terminal.type_hidden("too short")
    terminal.expect("at least 12 are needed")
    terminal.expect("New password:")
    terminal.type_hidden(PASSWORD)
    terminal.expect("Repeat for confirmation:")
    terminal.type_hidden(PASSWORD + " but different")
    terminal.expect("do not match")
    terminal.expect("New password:")
    terminal.type_hidden(PASSWORD)
    terminal.expect("Repeat for confirmation:")
    terminal.type_hidden(PASSWORD)
    terminal.expect("password set for user:ada@example.com")

    assert terminal.finish() == 0
    assert PASSWORD not in terminal.transcript + terminal.seen  # never echoed
    assert "too short" not in terminal.transcript + terminal.seen
    assert sign_in(runtime, "ada@example.com", PASSWORD, "127.0.0.1").user.email == "ada@example.com"
