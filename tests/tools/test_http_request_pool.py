"""`http.request` reuses connections, and only where a fresh client would have sent the same thing.

A loopback server records, for each request, the client port it came from: two requests on one
port came over one kept-alive connection.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from outbox.execution.service import run_action
from outbox.http_clients import ClientSettings, PooledClients
from outbox.runtime import Runtime
from tests.support.agents import make_agent
from tests.support.calls import load, submit_call


@dataclass
class Seen:
    port: int
    path: str
    headers: dict[str, str]


@dataclass
class ConnectionServer:
    """Answers 200; `/cookie` sets a cookie, `/big` sends 8 KiB."""

    seen: list[Seen] = field(default_factory=list)
    accepted: int = 0

    def start(self) -> None:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # as real servers do; keeps kept-alive replies prompt

            def log_message(self, *_args: object) -> None:
                return None

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                recorder.seen.append(Seen(self.client_address[1], self.path, headers))
                payload = b"x" * 8192 if self.path == "/big" else b"{}"
                self.send_response(200)
                if self.path == "/cookie":
                    self.send_header("Set-Cookie", "session=from-another-action; Path=/")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def process_request(self, request: object, client_address: object) -> None:
                recorder.accepted += 1
                super().process_request(request, client_address)  # type: ignore[arg-type]

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def ports(self) -> list[int]:
        return [s.port for s in self.seen]


@pytest.fixture
def make_server() -> Iterator[Callable[[], ConnectionServer]]:
    servers: list[ConnectionServer] = []

    def build() -> ConnectionServer:
        server = ConnectionServer()
        server.start()
        servers.append(server)
        return server

    yield build
    for server in servers:
        server.stop()


def get(runtime: Runtime, url: str) -> None:
    key = make_agent(runtime.db, f"pool-{uuid.uuid4().hex[:12]}", ["http-writer"])
    action_id = submit_call(runtime, key, "http.request", {"method": "GET", "url": url})
    assert run_action(runtime, action_id) == "succeeded", load(runtime, action_id).status_reason


def test_two_executions_to_one_target_share_one_connection(
    runtime: Runtime, make_server: Callable[[], ConnectionServer]
) -> None:
    server = make_server()
    get(runtime, f"{server.url}/first")
    get(runtime, f"{server.url}/second")

    assert [s.path for s in server.seen] == ["/first", "/second"]
    assert server.accepted == 1
    assert len(set(server.ports())) == 1


def test_another_target_gets_its_own_connection_and_the_first_sees_nothing_of_it(
    runtime: Runtime, make_server: Callable[[], ConnectionServer]
) -> None:
    first, second = make_server(), make_server()
    get(runtime, f"{first.url}/a")
    get(runtime, f"{second.url}/b")
    get(runtime, f"{first.url}/c")

    assert [s.path for s in first.seen] == ["/a", "/c"]
    assert [s.path for s in second.seen] == ["/b"]
    assert first.accepted == 1 and second.accepted == 1
    assert second.ports()[0] not in first.ports()


def test_other_client_settings_never_share_a_connection(
    make_runtime: Callable[..., Runtime], make_server: Callable[[], ConnectionServer]
) -> None:
    server = make_server()
    get(make_runtime(http_timeout_seconds=10.0), f"{server.url}/ten")
    get(make_runtime(http_timeout_seconds=7.0), f"{server.url}/seven")

    assert server.accepted == 2
    assert len(set(server.ports())) == 2


def test_a_cookie_set_in_one_reply_is_never_sent_with_the_next_request(
    runtime: Runtime, make_server: Callable[[], ConnectionServer]
) -> None:
    server = make_server()
    get(runtime, f"{server.url}/cookie")
    get(runtime, f"{server.url}/after")

    assert server.accepted == 1  # the same client and connection ...
    assert "cookie" not in server.seen[1].headers  # ... and still no cookie


def test_a_reply_cut_at_the_size_cap_does_not_leave_its_connection_for_the_next_request(
    make_runtime: Callable[..., Runtime], make_server: Callable[[], ConnectionServer]
) -> None:
    runtime = make_runtime(http_max_response_bytes=1024)
    server = make_server()
    key = make_agent(runtime.db, "capped", ["http-writer"])
    action_id = submit_call(runtime, key, "http.request", {"method": "GET", "url": f"{server.url}/big"})
    assert run_action(runtime, action_id) == "succeeded"
    assert load(runtime, action_id).response["truncated"] is True  # type: ignore[index]
    get(runtime, f"{server.url}/after")

    assert server.accepted == 2
    assert len(set(server.ports())) == 2


def test_clients_are_built_once_per_settings_and_rebuilt_after_close() -> None:
    clients = PooledClients()
    ten = clients.client(ClientSettings(timeout_seconds=10.0))

    assert clients.client(ClientSettings(timeout_seconds=10.0)) is ten
    assert clients.client(ClientSettings(timeout_seconds=5.0)) is not ten
    assert ten.follow_redirects is False
    assert ten.trust_env is False
    clients.close()
    assert ten.is_closed
    assert clients.client(ClientSettings(timeout_seconds=10.0)) is not ten
    clients.close()
