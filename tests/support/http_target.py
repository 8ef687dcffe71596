"""A real HTTP server on loopback, the target of `http.request` in tests.

It records every request it receives and answers according to the path:
`/status/<code>`, `/slow/<seconds>`, `/big/<bytes>`, `/bytes/<hex>` (exactly those bytes, for
bodies that are not UTF-8 text), `/redirect` (to another host), anything else 200 with a JSON echo.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class TargetServer:
    requests: list[ReceivedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    max_in_flight: int = 0

    def start(self) -> None:
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Kept-alive connections (the outbox pools them): without this, delayed ACKs add
            # ~40 ms to every reply written in two parts.
            disable_nagle_algorithm = True

            def log_message(self, *_args: object) -> None:
                return None

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                with target.lock:
                    target.requests.append(
                        ReceivedRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    target.in_flight += 1
                    target.max_in_flight = max(target.max_in_flight, target.in_flight)
                try:
                    self._answer(body)
                finally:
                    with target.lock:
                        target.in_flight -= 1

            def _answer(self, body: bytes) -> None:
                parts = self.path.split("?")[0].strip("/").split("/")
                status, payload, extra = 200, b"", {}
                if parts[0] == "status" and len(parts) > 1:
                    status = int(parts[1])
                    payload = json.dumps({"status": status}).encode()
                elif parts[0] == "slow" and len(parts) > 1:
                    time.sleep(float(parts[1]))
                    payload = b'{"slow": true}'
                elif parts[0] == "big" and len(parts) > 1:
                    payload = b"x" * int(parts[1])
                elif parts[0] == "bytes" and len(parts) > 1:
                    payload = bytes.fromhex(parts[1])
                elif parts[0] == "redirect":
                    status, extra = 302, {"Location": "http://example.invalid/elsewhere"}
                else:
                    payload = json.dumps(
                        {"method": self.command, "path": self.path, "body": body.decode("utf-8", "replace")}
                    ).encode()
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def received(self, path_prefix: str = "") -> list[ReceivedRequest]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]
