"""The round trip of an allowed call over MCP tools/call, next to the same call over
POST /v1/actions with `Prefer: wait`, against one real server, in one run.

    python benchmarks/mcp_latency.py [--database sqlite|postgresql] [--calls 400] [--warmup 40]

One outbox (`uvicorn --factory outbox.api.app:create_app`, what `outbox serve` runs: embedded
workers in the same process) on the shipped policies, with benchmarks/_target.py as the target of
`http.request`. One agent (`http-reader`) makes the same allowed call, `GET` to the target, each
time a new action (a fresh idempotency key and query string per call), and waits for its outcome
(`succeeded`):

a. **HTTP**: `POST /v1/actions` with `Idempotency-Key` and `Prefer: wait=30`, answered 200 when the
   action has run; httpx, one kept-alive connection.
b. **MCP, raw**: the same call as a 2026-07-28 `tools/call` POSTed to /mcp with httpx (one
   kept-alive connection, the key in `_meta`): the server's cost of the MCP face, with no client
   library in the way; and the same **without a key**, as most MCP clients call: the gateway
   derives one (and first looks up the previous window's).
c. **MCP, SDK client**: `mcp.Client.call_tool` over the SDK's Streamable HTTP client, one
   connected client: what an agent using the official SDK sees (the client adds its own work:
   pydantic models, the output schema check of every result).

The calls are sequential (one in flight: this is latency, not throughput) and interleaved (a, b,
b without a key, c, a, …), so that all see the same machine, database size and worker state. A
warm-up round of each runs first and is not counted. Printed: p50, p90, p99 and mean per face, and the
ratios to HTTP. With `--database postgresql` a fresh database is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import httpx2
from _servers import (
    bench_environment,
    free_port,
    load_average,
    outbox_cli,
    serving,
)
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

UVICORN_FLAGS = ["--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"]
KEY_META = "dev.agent-outbox/idempotency_key"
MODERN = "2026-07-28"


@dataclass
class Face:
    name: str
    call: Callable[[], Awaitable[None]]
    seconds: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--calls", type=int, default=400, help="measured calls per face")
    parser.add_argument("--warmup", type=int, default=40, help="calls per face before measuring")
    return parser.parse_args()


@contextmanager
def outbox_server(args: argparse.Namespace) -> Iterator[tuple[str, str, int]]:
    """The outbox and the target, started; yields (base URL, agent key, target port)."""
    with ExitStack() as stack:
        workdir, target_port, env = bench_environment(stack, database=args.database, prefix="outbox-bench-mcp")
        outbox_cli(env, workdir, "db", "upgrade")
        key = outbox_cli(env, workdir, "agents", "create", "bench", "--role", "http-reader")
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "outbox.api.app:create_app",
            "--port",
            str(port),
            *UVICORN_FLAGS,
        ]
        url = f"http://127.0.0.1:{port}"
        stack.enter_context(serving(argv, env=env, cwd=workdir, log=workdir / "outbox.log", ready_url=url))
        yield url, key, target_port


def tools_call(url: str, key: str | None) -> dict[str, Any]:
    """A 2026-07-28 tools/call request body (the envelope in `_meta`), with `key` if given."""
    meta: dict[str, Any] = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    if key is not None:
        meta[KEY_META] = key
    return {
        "jsonrpc": "2.0",
        "id": uuid.uuid4().hex,
        "method": "tools/call",
        "params": {"name": "http__request", "arguments": {"method": "GET", "url": url}, "_meta": meta},
    }


def fresh(target: str) -> str:
    """The target with a query of its own: a new call every time, even without a key."""
    return f"{target}?call={uuid.uuid4().hex}"


async def run(args: argparse.Namespace, url: str, key: str, target: str) -> list[Face]:
    bearer = {"Authorization": f"Bearer {key}"}
    mcp_headers = {
        **bearer,
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "http__request",
    }
    async with (
        httpx.AsyncClient(base_url=url, headers=bearer, timeout=60) as http,
        httpx.AsyncClient(base_url=url, headers=mcp_headers, timeout=60) as raw,
        httpx2.AsyncClient(headers=bearer, timeout=60) as sdk_http,
        Client(streamable_http_client(f"{url}/mcp", http_client=sdk_http), mode=MODERN, cache=None) as sdk,
    ):
        await sdk.list_tools()  # the SDK checks results against the listed output schema

        async def over_http() -> None:
            body = {"tool": "http.request", "args": {"method": "GET", "url": fresh(target)}}
            headers = {"Idempotency-Key": uuid.uuid4().hex, "Prefer": "wait=30"}
            answer = await http.post("/v1/actions", json=body, headers=headers)
            if answer.status_code != 200 or answer.json()["status"] != "succeeded":
                raise SystemExit(f"HTTP: {answer.status_code} {answer.text[:300]}")

        async def over_mcp_raw(key: str | None) -> None:
            answer = await raw.post("/mcp", json=tools_call(fresh(target), key))
            result = answer.json().get("result", {})
            if answer.status_code != 200 or (result.get("structuredContent") or {}).get("status") != "succeeded":
                raise SystemExit(f"MCP raw: {answer.status_code} {answer.text[:300]}")

        async def over_mcp_keyed() -> None:
            await over_mcp_raw(uuid.uuid4().hex)

        async def over_mcp_keyless() -> None:
            await over_mcp_raw(None)

        async def over_mcp_sdk() -> None:
            result = await sdk.call_tool(
                "http__request", {"method": "GET", "url": fresh(target)}, meta={KEY_META: uuid.uuid4().hex}
            )
            if result.is_error or (result.structured_content or {}).get("status") != "succeeded":
                raise SystemExit(f"MCP SDK: {result}")

        faces = [
            Face("POST /v1/actions, Prefer: wait", over_http),
            Face("MCP tools/call, raw httpx", over_mcp_keyed),
            Face("MCP tools/call, raw, no key", over_mcp_keyless),
            Face("MCP tools/call, SDK client", over_mcp_sdk),
        ]
        for round_number in range(args.warmup + args.calls):
            for face in faces:
                started = time.perf_counter()
                await face.call()
                if round_number >= args.warmup:
                    face.seconds.append(time.perf_counter() - started)
        return faces


def report(args: argparse.Namespace, faces: list[Face]) -> None:
    print(
        f"database {args.database}; {args.calls} calls per face after {args.warmup} warm-up, one in flight, "
        f"interleaved; {os.cpu_count()} CPUs, {load_average()}\n"
    )
    print(f"{'face':<34} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for face in faces:
        print(
            f"{face.name:<34} {face.percentile(0.5):>8.2f} {face.percentile(0.9):>8.2f} "
            f"{face.percentile(0.99):>8.2f} {statistics.fmean(face.seconds) * 1000:>8.2f}"
        )
    http = faces[0]
    print()
    for face in faces[1:]:
        print(
            f"{face.name} / HTTP: p50 {face.percentile(0.5) / http.percentile(0.5):.2f}x, "
            f"p99 {face.percentile(0.99) / http.percentile(0.99):.2f}x"
        )


def main() -> None:
    args = parse_args()
    with outbox_server(args) as (url, key, target_port):
        faces = asyncio.run(run(args, url, key, f"http://127.0.0.1:{target_port}/ping"))
    report(args, faces)


if __name__ == "__main__":
    main()
