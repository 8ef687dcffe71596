"""A real outbox under real uvicorn on loopback, with embedded workers, for the client to talk to.

The client does not know which database the server uses: these tests run on SQLite only (the
server's own tests cover PostgreSQL).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from outbox.api.app import create_app
from outbox.runtime import Runtime
from tests.client.proxy import FaultyProxy
from tests.support.agents import make_agent

ADMIN_TOKEN = "admin-token-for-the-client-tests-0123456789"


@dataclass
class OutboxServer:
    url: str
    runtime: Runtime

    def agent(self, name: str, *roles: str) -> str:
        """A new agent's API key."""
        return make_agent(self.runtime.db, name, list(roles))

    def deny(self, action_id: str, reason: str, *, may_resubmit: bool = False) -> None:
        """A human rejects the action's approval request, through the admin API."""
        response = httpx.post(
            f"{self.url}/v1/admin/approvals/{action_id}/deny",
            json={"as": "user:oncall@example.com", "reason": reason, "may_resubmit": may_resubmit},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert response.status_code == 200, response.text

    def action_count(self) -> int:
        from sqlalchemy import text  # noqa: PLC0415 - only the counting helper reads the database

        with self.runtime.db.read_session() as session:
            return int(session.execute(text("SELECT count(*) FROM actions")).scalar_one())


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def start_outbox(make_runtime: Callable[..., Runtime]) -> Iterator[Callable[..., OutboxServer]]:
    """Starts the outbox with extra settings (at most one per test)."""
    from workers.embedded import EmbeddedDispatcher  # noqa: PLC0415 - the worker backend loads only where it runs

    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**settings: object) -> OutboxServer:
        runtime = make_runtime(EmbeddedDispatcher(), admin_token=SecretStr(ADMIN_TOKEN), **settings)
        config = uvicorn.Config(create_app(runtime=runtime), host="127.0.0.1", port=0, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            assert thread.is_alive(), "uvicorn exited"
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        return OutboxServer(f"http://127.0.0.1:{port}", runtime)

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def outbox_server(start_outbox: Callable[..., OutboxServer]) -> OutboxServer:
    return start_outbox()


@pytest.fixture
def proxy(outbox_server: OutboxServer) -> Iterator[FaultyProxy]:
    faulty = FaultyProxy(outbox_server.url)
    faulty.start()
    yield faulty
    faulty.stop()
