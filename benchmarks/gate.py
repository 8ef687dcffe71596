"""Throughput and latency of POST /v1/actions through the whole gate, against a bare endpoint.

    python benchmarks/gate.py [--duration 10] [--concurrency 16] [--database sqlite|postgresql]

Both servers run as one uvicorn process each on loopback, started by this script; the same
closed-loop load (N concurrent clients, each waiting for its answer before sending the next)
hits each in turn. The gate does everything it does in production for every request:
authenticate the key, validate, claim the idempotency key, decide with Casbin, commit the action
and its audit events, and publish it; the embedded workers execute the calls (GET to a local
target) in the same process while the load runs. Printed: requests/s, p50 and p99 latency for
both, and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from _servers import create_database, drop_database, free_port, wait_ready

REPO = Path(__file__).resolve().parent.parent


def start_target() -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            return None

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


async def load(
    url: str, key: str, body: dict[str, object], duration: float, concurrency: int
) -> tuple[int, list[float], int]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def one_client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex}
                started = time.perf_counter()
                response = await client.post("/v1/actions", json=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 202:
                    errors += 1

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return len(latencies), latencies, errors


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(name: str, url: str, key: str, body: dict[str, object], args: argparse.Namespace) -> dict[str, float]:
    asyncio.run(load(url, key, body, min(2.0, args.duration), args.concurrency))  # warm-up
    count, latencies, errors = asyncio.run(load(url, key, body, args.duration, args.concurrency))
    result = {
        "rps": count / args.duration,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "errors": float(errors),
    }
    print(
        f"{name:<28} {result['rps']:>9.1f} req/s   p50 {result['p50_ms']:>7.2f} ms"
        f"   p99 {result['p99_ms']:>7.2f} ms   errors {errors}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per server")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="outbox-bench-"))
    shutil.copytree(REPO / "policies", workdir / "policies")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    env.update({"OUTBOX_LOG_LEVEL": "WARNING", "OUTBOX_POLICY_WATCH": "false", "PYTHONPATH": str(REPO)})
    database_url = None
    if args.database == "postgresql":
        database_url = create_database("outbox_bench")
        env["OUTBOX_DATABASE_URL"] = database_url
        subprocess.run(
            [sys.executable, "-m", "outbox.cli.main", "db", "upgrade"],
            env=env,
            cwd=workdir,
            check=True,
            capture_output=True,
        )
    target = start_target()
    key = subprocess.run(
        [sys.executable, "-m", "outbox.cli.main", "agents", "create", "bench", "--role", "http-reader"],
        env=env,
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    body = {
        "tool": "http.request",
        "args": {"method": "GET", "url": f"http://127.0.0.1:{target.server_address[1]}/ping"},
    }

    gate_port, bare_port = free_port(), free_port()
    servers = []
    try:
        bare = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "benchmarks._bare_app:app",
                "--port",
                str(bare_port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=env,
            cwd=REPO,
        )
        servers.append(bare)
        gate = subprocess.Popen(
            [sys.executable, "-m", "outbox.cli.main", "serve", "--port", str(gate_port)], env=env, cwd=workdir
        )
        servers.append(gate)
        wait_ready(f"http://127.0.0.1:{bare_port}", bare)
        wait_ready(f"http://127.0.0.1:{gate_port}", gate)
        print(f"database: {args.database}; {args.concurrency} concurrent clients; {args.duration:.0f} s per server\n")
        baseline = measure("bare FastAPI endpoint", f"http://127.0.0.1:{bare_port}", key, body, args)
        gated = measure("outbox gate (full pipeline)", f"http://127.0.0.1:{gate_port}", key, body, args)
        print()
        print(
            f"throughput ratio gate/bare: {gated['rps'] / baseline['rps']:.3f}"
            f"  ({baseline['rps'] / gated['rps']:.1f}x slower)"
        )
        print(f"p50 latency ratio gate/bare: {gated['p50_ms'] / baseline['p50_ms']:.1f}x")
        print(f"p99 latency ratio gate/bare: {gated['p99_ms'] / baseline['p99_ms']:.1f}x")
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
        target.shutdown()
        if database_url is not None:
            drop_database(database_url)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
