"""The worker side of `http.request`: one execution against a loopback target, and the host
concurrency slot it takes.

    .venv/bin/python benchmarks/worker_http.py                          # SQLite
    .venv/bin/python benchmarks/worker_http.py --database postgresql    # 127.0.0.1:5432

Prints, from one run, each figure before and after (alternating rounds, medians) and the ratio:
- `HttpRequestTool.execute` end to end (slot, rate budget, request, release) against a keep-alive
  HTTP/1.1 server on loopback, GET and POST: before, a new `httpx.Client` per execution; after,
  the pooled client (`outbox/http_clients.py`);
- `acquire_slot` + `release_slot` at `max_concurrent` 16 and 1000 with none, half and all of
  the slots held by others (all held: a refused acquire): before, the layout with
  `max_concurrent` rows per key and a conditional update per slot (kept here as the baseline);
  after, leases (`outbox/budgets/service.py`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from sqlalchemy import create_engine, insert, or_, text, update
from sqlmodel import Session, col

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from outbox.budgets.models import ConcurrencySlot  # noqa: E402
from outbox.budgets.service import acquire_slot, release_slot  # noqa: E402
from outbox.config import Settings  # noqa: E402
from outbox.db import Database, insert_or_ignore  # noqa: E402
from outbox.http_clients import ClientSettings, PooledClients  # noqa: E402
from outbox.migrations import upgrade  # noqa: E402
from outbox.sqltypes import utcnow  # noqa: E402
from outbox.toolkit.base import ExecutionContext  # noqa: E402
from outbox.toolkit.registry import ToolServices  # noqa: E402
from outbox.tools.http_request import HostLimits, HttpRequestArgs, HttpRequestTool, HttpToolConfig  # noqa: E402

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TTL = timedelta(hours=1)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # As production servers do (uvicorn, nginx): without it the header and body writes of a
    # reply on a kept-alive connection wait 40 ms for a delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, *_args: object) -> None:
        return None

    def do_GET(self) -> None:
        if length := int(self.headers.get("content-length") or 0):
            self.rfile.read(length)
        payload = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = do_GET


@contextmanager
def loopback_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def database(kind: str, workdir: Path) -> Iterator[Settings]:
    if kind == "sqlite":
        settings = Settings(database_url=f"sqlite:///{workdir / 'bench.db'}", data_dir=workdir / "data")
        upgrade(settings)
        yield settings
        return
    name = f"outbox_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        settings = Settings(database_url=PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", data_dir=workdir / "data")
        upgrade(settings)
        yield settings
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def timed_pair(
    before: Callable[[], object], after: Callable[[], object], rounds: int
) -> tuple[list[float], list[float]]:
    """Alternate the two, so that whatever else the machine does weighs on both alike."""
    before()  # warm up (first connection, first statement compiled)
    after()
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for fn, into in ((before, samples[0]), (after, samples[1])):
            started = time.perf_counter()
            fn()
            into.append(time.perf_counter() - started)
    return samples


def show(label: str, samples: tuple[list[float], list[float]]) -> None:
    before, after = (statistics.median(s) for s in samples)
    p99 = sorted(samples[1])[int(len(samples[1]) * 0.99) - 1]
    print(
        f"  {label:<44} before p50 {before * 1000:8.3f} ms | after p50 {after * 1000:7.3f} ms"
        f" p99 {p99 * 1000:7.3f} ms | {before / after:6.1f}x faster"
    )


class _ClientPerRequest(PooledClients):
    """The way the tool sent before: a new client (and TLS context, and connection) each time."""

    def __init__(self) -> None:
        super().__init__()
        self._last: httpx.Client | None = None

    def client(self, settings: ClientSettings) -> httpx.Client:
        if self._last is not None:
            self._last.close()
        self._last = httpx.Client(timeout=settings.timeout_seconds, follow_redirects=False, trust_env=False)
        return self._last


def bench_execute(settings: Settings, base_url: str, rounds: int) -> None:
    print("HttpRequestTool.execute (slot, rpm budget, request, release), loopback keep-alive server:")
    limits = HostLimits(requests_per_minute=10**9, max_concurrent=16)
    services = ToolServices(settings=settings, db=Database(settings))
    before = HttpRequestTool(HttpToolConfig(defaults=limits), services, _ClientPerRequest())
    after = HttpRequestTool(HttpToolConfig(defaults=limits), services, PooledClients())
    ctx = ExecutionContext("act_bench", "agt_bench", "bench", None, "k", 1)
    for raw in (
        {"method": "GET", "url": f"{base_url}/orders"},
        {"method": "POST", "url": f"{base_url}/orders", "json": {"n": 1}},
    ):
        args = HttpRequestArgs.model_validate(raw)
        show(
            f"{raw['method']}",
            timed_pair(partial(before.execute, ctx, args), partial(after.execute, ctx, args), rounds),
        )
    services.db.dispose()


def bench_slots(settings: Settings, rounds: int) -> None:
    print("slots: acquire_slot + release_slot (one transaction each), before = max_concurrent rows per key:")
    with Database(settings) as db:
        for limit in (16, 1000):
            for held in (0, limit // 2, limit):
                old, new = f"old:{limit}:{held}", f"new:{limit}:{held}"
                _seed(db, old, new, limit, held)
                label = f"max_concurrent {limit:>4}, {held:>4} held" + (" (refused)" if held == limit else "")
                before = partial(_cycle, db, old, limit, _acquire_preinserted, _release_preinserted)
                after = partial(_cycle, db, new, limit, acquire_slot, release_slot)
                show(label, timed_pair(before, after, rounds))


def _seed(db: Database, old: str, new: str, limit: int, held: int) -> None:
    """`held` holders of each key: in the pre-inserted layout (all `limit` rows) and as leases."""
    expires = utcnow() + TTL
    with db.session() as session:
        rows = [
            {
                "key": old,
                "slot": n,
                "holder": f"o{n}" if n < held else None,
                "expires_at": expires if n < held else None,
            }
            for n in range(limit)
        ]
        rows += [{"key": new, "slot": n, "holder": f"o{n}", "expires_at": expires} for n in range(held)]
        session.execute(insert(ConcurrencySlot), rows)


def _cycle(
    db: Database,
    key: str,
    limit: int,
    acquire: Callable[[Session, str, int, str, timedelta], bool],
    release: Callable[[Session, str, str], None],
) -> None:
    with db.session() as session:
        got = acquire(session, key, limit, "bench", TTL)
    if got:
        with db.session() as session:
            release(session, key, "bench")


def _acquire_preinserted(session: Session, key: str, limit: int, holder: str, ttl: timedelta) -> bool:
    """The acquire this change replaced (`limit` rows per key, a conditional update per slot),
    kept here as the baseline."""
    now = utcnow()
    insert_or_ignore(session, ConcurrencySlot, [{"key": key, "slot": n} for n in range(limit)])
    for slot in range(limit):
        free = or_(
            col(ConcurrencySlot.holder).is_(None),
            col(ConcurrencySlot.expires_at) < now,
            col(ConcurrencySlot.holder) == holder,
        )
        result = session.execute(
            update(ConcurrencySlot)
            .where(col(ConcurrencySlot.key) == key, col(ConcurrencySlot.slot) == slot, free)
            .values(holder=holder, expires_at=now + ttl)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            return True
    return False


def _release_preinserted(session: Session, key: str, holder: str) -> None:
    session.execute(
        update(ConcurrencySlot)
        .where(col(ConcurrencySlot.key) == key, col(ConcurrencySlot.holder) == holder)
        .values(holder=None, expires_at=None)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--rounds", type=int, default=300)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, database(options.database, Path(tmp)) as settings:
        print(f"database: {options.database}, {options.rounds} rounds per figure, load average {os.getloadavg()}")
        with loopback_server() as base_url:
            bench_execute(settings, base_url, options.rounds)
        bench_slots(settings, options.rounds)
        print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
