"""A local HTTP server implementing the slice of the Slack Web API the outbox uses.

slack_sdk's WebClient is pointed at it through `OUTBOX_SLACK_API_URL`. It records every call
(method, JSON body, headers), answers like Slack (`{"ok": true, ...}`), and can be told to answer
429 `ratelimited` with a Retry-After, to refuse with a Slack error, or to go down entirely (its
port then refuses connections) and come back on the same port.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

BOT_TOKEN = "xoxb-test-token"
CHANNEL_ID = "C0APPROVALS"
METHODS = ("chat.postMessage", "chat.update", "chat.postEphemeral", "views.open")


@dataclass
class SlackCall:
    method: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class _Scripted:
    method: str | None
    status: int
    error: str
    retry_after: int | None
    times: int


@dataclass
class FakeSlack:
    calls: list[SlackCall] = field(default_factory=list)
    refused: list[SlackCall] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0
    _scripts: list[_Scripted] = field(default_factory=list)
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- control ---------------------------------------------------------------------------

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                return None

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                method = self.path.split("?")[0].rsplit("/", 1)[-1]
                status, payload, headers = fake._answer(method, raw, {k.lower(): v for k, v in self.headers.items()})
                body = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def go_down(self) -> None:
        """Stop listening: calls now fail with connection refused."""
        self.stop()

    def come_back(self) -> None:
        self.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def rate_limit(self, method: str | None = None, *, times: int = 1, retry_after: int = 1) -> None:
        """The next `times` calls (to `method`, or any) answer 429 ratelimited."""
        with self.lock:
            self._scripts.append(_Scripted(method, 429, "ratelimited", retry_after, times))

    def refuse(self, method: str | None = None, *, error: str = "channel_not_found", times: int = 1) -> None:
        """The next `times` calls answer 200 with ok=false and `error` (Slack's way)."""
        with self.lock:
            self._scripts.append(_Scripted(method, 200, error, None, times))

    def clear_failures(self) -> None:
        with self.lock:
            self._scripts.clear()

    def calls_to(self, method: str) -> list[SlackCall]:
        with self.lock:
            return [c for c in self.calls if c.method == method]

    def wait_for(self, method: str, count: int = 1, timeout: float = 10.0) -> list[SlackCall]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.calls_to(method)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"expected {count} {method} call(s), got {len(self.calls_to(method))}")

    # -- the API ---------------------------------------------------------------------------

    def _answer(self, method: str, raw: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        body = _parse(raw, headers.get("content-type", ""))
        call = SlackCall(method, body, headers)
        if headers.get("authorization") != f"Bearer {BOT_TOKEN}":
            with self.lock:
                self.refused.append(call)
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        with self.lock:
            for script in self._scripts:
                if script.times > 0 and script.method in (None, method):
                    script.times -= 1
                    self.refused.append(call)
                    extra = {"Retry-After": str(script.retry_after)} if script.retry_after is not None else {}
                    return script.status, {"ok": False, "error": script.error}, extra
            if method not in METHODS:
                self.refused.append(call)
                return 200, {"ok": False, "error": "unknown_method"}, {}
            self.calls.append(call)
            ts = f"{int(time.time())}.{next(self._ts):06d}"
        if method == "chat.postMessage":
            return 200, {"ok": True, "channel": CHANNEL_ID, "ts": ts, "message": {"text": body.get("text")}}, {}
        if method == "chat.update":
            return 200, {"ok": True, "channel": body.get("channel"), "ts": body.get("ts")}, {}
        if method == "chat.postEphemeral":
            return 200, {"ok": True, "message_ts": ts}, {}
        return 200, {"ok": True, "view": {"id": "V0DENYFORM"}}, {}


def _parse(raw: bytes, content_type: str) -> dict[str, Any]:
    text = raw.decode("utf-8") if raw else ""
    if "json" in content_type:
        parsed = json.loads(text or "{}")
        return parsed if isinstance(parsed, dict) else {}
    return {k: v[0] for k, v in parse_qs(text).items()}
