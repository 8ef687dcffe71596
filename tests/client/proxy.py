"""A real HTTP proxy on loopback that fails on purpose, then forwards to the real outbox.

Each request takes the next fault from the script (`proxy.script("503", "forward-then-drop")`),
and forwards once the script is empty. The faults are what an agent meets on the way:

- `503` / `429`: answered by the proxy, with a Retry-After (`retry_after`, seconds or an HTTP-date);
  the 503 is the outbox's "tool cannot run here" problem document;
- `409`: the outbox's "key in progress" answer (Retry-After: 1);
- `drop`: the connection closes before anything reaches the outbox;
- `forward-then-drop`: the outbox records and answers, the answer is lost on the way back;
- `forward-then-stall`: the outbox answers, the proxy holds the answer past the client's timeout;
- `html-502` / `html-200`: a page from something that is not the outbox (a gateway, a portal).

Every request is recorded with its Idempotency-Key and when it arrived (monotonic seconds).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

PROBLEMS = "https://agent-outbox.dev/problems/"


@dataclass
class Seen:
    method: str
    path: str
    idempotency_key: str | None
    arrived: float
    fault: str
    answered: float | None = None
    retry_after_seconds: float | None = None


@dataclass
class FaultyProxy:
    upstream: str
    retry_after: str = "1"
    stall_seconds: float = 3.0
    seen: list[Seen] = field(default_factory=list)
    _faults: deque[str] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, *faults: str) -> None:
        with self._lock:
            self._faults.extend(faults)

    def posts(self) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.method == "POST"]

    def start(self) -> None:
        proxy = self
        upstream = httpx.Client(base_url=self.upstream, timeout=70)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                return None

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    fault = proxy._faults.popleft() if proxy._faults else "forward"
                    seen = Seen(self.command, self.path, self.headers.get("idempotency-key"), time.monotonic(), fault)
                    proxy.seen.append(seen)
                if fault == "drop":
                    self.close_connection = True
                    return
                if fault in ("503", "429", "409"):
                    self._problem(int(fault), seen)
                    return
                if fault.startswith("html-"):
                    page = b"<html><body>Bad Gateway</body></html>"
                    self._send(int(fault.removeprefix("html-")), page, {"Content-Type": "text/html"})
                    return
                forwarded = upstream.request(
                    self.command,
                    self.path,
                    content=body,
                    headers={k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")},
                )
                if fault == "forward-then-drop":
                    self.close_connection = True
                    return
                if fault == "forward-then-stall":
                    time.sleep(proxy.stall_seconds)
                self._send(forwarded.status_code, forwarded.content, dict(forwarded.headers))

            def _problem(self, status: int, seen: Seen) -> None:
                slug, title = {
                    503: ("tool-unavailable", "Tool unavailable"),
                    429: ("too-many-requests", "Too many requests"),
                    409: ("idempotency-key-in-progress", "Request with this Idempotency-Key in progress"),
                }[status]
                document = {
                    "type": PROBLEMS + slug,
                    "title": title,
                    "status": status,
                    "detail": f"{title} (said by the test proxy).",
                    "hint": "Retry after the number of seconds in Retry-After.",
                    "reason": "bubblewrap is not installed" if status == 503 else None,
                }
                retry_after = "1" if status == 409 else proxy.retry_after
                seen.answered = time.monotonic()
                seen.retry_after_seconds = _seconds(retry_after)
                self._send(
                    status,
                    json.dumps(document).encode(),
                    {"Content-Type": "application/problem+json", "Retry-After": retry_after},
                )

            def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _handle

        self._upstream = upstream
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._upstream.close()


def _seconds(retry_after: str) -> float:
    """How long, from now, the Retry-After asks for (for the proxy's own record)."""
    if retry_after.isdigit():
        return float(retry_after)
    return max(0.0, (parsedate_to_datetime(retry_after) - datetime.now(UTC)).total_seconds())
