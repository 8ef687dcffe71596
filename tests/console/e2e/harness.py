"""A real `outbox serve` and a real Chromium for the console's end-to-end tests.

The server runs as its own process (uvicorn, the embedded dispatcher) on a private copy of the
shipped policies, on SQLite or on a PostgreSQL database of its own. Chromium is Debian's
(/usr/bin/chromium), driven by Playwright's sync API; no browser is ever downloaded.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import ConsoleMessage, Page, Response
from sqlalchemy import create_engine, text

from tests.conftest import POLICIES
from tests.support.processes import OUTBOX, free_port, outbox_env, run_cli, start, stop, wait_ready

CHROMIUM = "/usr/bin/chromium"
KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: production
  cluster: {server: "https://127.0.0.1:9"}
contexts:
- name: production
  context: {cluster: production, user: bot}
current-context: production
users:
- name: bot
  user: {token: not-a-secret}
"""
# Debian's chromium refuses to start as root inside a container without this.
CHROMIUM_ARGS = ["--no-sandbox"]


@dataclass
class ConsoleServer:
    """One `outbox serve` process and the CLI pointed at the same database and policies."""

    workdir: Path
    database_url: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shutil.copytree(POLICIES, self.workdir / "policies")
        self.env = outbox_env(
            OUTBOX_DATABASE_URL=self.database_url,
            # kubectl's tools need a kubeconfig to be offered at all; this one names no reachable
            # cluster, so a dry run fails the way it would against a cluster that is down.
            OUTBOX_SANDBOX_SECRETS=json.dumps({"kubeconfig": KUBECONFIG}),
            # ... and their clusters' API servers as destinations of the egress proxy.
            OUTBOX_SANDBOX_DESTINATIONS=json.dumps(
                {name: {"host": f"{name}.cluster.test", "port": 6443} for name in ("staging", "production")}
            ),
            # Paused mail is looked at again this often: a resume shows within the test.
            OUTBOX_MAIL_PAUSE_RECHECK_SECONDS="1",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "serve.log"

    @property
    def policies(self) -> Path:
        return self.workdir / "policies"

    def start(self) -> None:
        self.process = start(["serve", "--port", str(self.port)], self.env, self.workdir, self.log)
        wait_ready(self.url, self.process, self.log)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def cli(self, *args: str, stdin: str | None = None) -> str:
        if stdin is None:
            return run_cli(list(args), self.env, self.workdir)
        result = subprocess.run(
            [*OUTBOX, *args],
            env=self.env,
            cwd=self.workdir,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def agent(self, name: str, *roles: str) -> str:
        """Create an agent with the CLI; returns its API key."""
        return self.cli("agents", "create", name, *[a for r in roles for a in ("--role", r)])

    def user(self, email: str, password: str, *, operator: bool = False) -> None:
        """Create a console user with the CLI and set the password through stdin."""
        self.cli("users", "add", email, *(["--role", "operator"] if operator else []))
        self.cli("users", "passwd", email, stdin=f"{password}\n")

    def submit(
        self,
        key: str,
        tool: str,
        args: dict[str, Any],
        *,
        idempotency_key: str,
        on_behalf_of: str | None = None,
        reason: str | None = None,
        wait: int | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key}
        if wait is not None:
            headers["Prefer"] = f"wait={wait}"
        body: dict[str, Any] = {"tool": tool, "args": args}
        if on_behalf_of is not None:
            body["on_behalf_of"] = on_behalf_of
        if reason is not None:
            body["reason"] = reason
        return httpx.post(f"{self.url}/v1/actions", json=body, headers=headers, timeout=(wait or 0) + 30)

    def action(self, key: str, action_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/v1/actions/{action_id}", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def execute_sql(self, statement: str, **params: object) -> None:
        """Change a row behind the server's back (an expiry moved into the past, say)."""
        engine = create_engine(self.database_url)
        try:
            with engine.begin() as connection:
                connection.execute(text(statement), params)
        finally:
            engine.dispose()

    def expire_approval(self, action_id: str) -> None:
        self.execute_sql(
            "UPDATE approval_requests SET expires_at = :past WHERE action_id = :action_id",
            past=datetime(2020, 1, 1, tzinfo=UTC),
            action_id=action_id,
        )


@dataclass
class PageWatch:
    """What a page did that a user would call broken: script errors, CSP reports, failed requests."""

    errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        page.on("response", self._response)
        page.on("request", lambda request: self.requested.append(request.url))

    def _console(self, message: ConsoleMessage) -> None:
        # Chromium reports CSP violations and failed loads as console errors.
        if message.type == "error":
            self.errors.append(f"console: {message.text} (at {message.location.get('url', '')})")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.failed.append(f"{response.status} {response.request.method} {response.url}")

    def assert_clean(self, *, forgive_in: str | None = None) -> None:
        """Nothing went wrong; `forgive_in` names a document (the e-mail frame) whose console
        errors are expected: there Chromium reports the scripts and remote images it blocked."""
        errors = [e for e in self.errors if forgive_in is None or not e.endswith(f"{forgive_in})")]
        assert not errors, errors
        assert not self.failed, self.failed
        self.errors.clear()
        self.failed.clear()


def screenshot(page: Page, directory: Path, name: str) -> Path:
    """Save a full-page screenshot, and refuse a blank one: the PNG must hold more than one colour."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert png_colours(path.read_bytes()) > 1, f"{path} is a single colour"
    return path


def png_colours(data: bytes, limit: int = 2) -> int:
    """How many distinct pixel values a PNG holds (counting stops at `limit`).

    Decoded here with zlib because the suite has no imaging library: Chromium writes 8-bit RGB(A)
    PNGs, non-interlaced, so each scanline is a filter byte and raw samples.
    """
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, idat, header = 8, b"", b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        chunk = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        position += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, (depth, colour_type, interlace)
    channels = 3 if colour_type == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    seen: set[bytes] = set()
    previous = bytearray(stride)
    for row in range(height):
        start_at = row * (stride + 1)
        kind, line = raw[start_at], bytearray(raw[start_at + 1 : start_at + 1 + stride])
        _unfilter(kind, line, previous, channels)
        for column in range(0, stride, channels * 7):  # a sample of pixels is plenty
            seen.add(bytes(line[column : column + channels]))
            if len(seen) >= limit:
                return len(seen)
        previous = line
    return len(seen)


def _unfilter(kind: int, line: bytearray, previous: bytearray, bpp: int) -> None:
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up = previous[i]
        upper_left = previous[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + up) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (left + up) // 2) & 0xFF
        elif kind == 4:
            estimate = left + up - upper_left
            pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - upper_left)
            predictor = left if pa <= pb and pa <= pc else up if pb <= pc else upper_left
            line[i] = (line[i] + predictor) & 0xFF


def sign_in(page: Page, server: ConsoleServer, email: str, password: str) -> None:
    """Sign in through the form, as a person would, and land on the inbox."""
    page.goto(f"{server.url}/console/sign-in")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.url}/console")
