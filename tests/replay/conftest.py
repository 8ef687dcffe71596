"""A real recording, made once per module: `outbox serve` (real uvicorn, SQLite, embedded workers
and mail sink) answers a scripted set of calls over HTTP and MCP, then `outbox audit export`
writes the export the replay twin serves. What the live clients got is kept for comparison."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest

from outbox.mail.sending.sink import read_maildir
from tests.conftest import POLICIES
from tests.mcp.conftest import mcp_client
from tests.support.http_target import TargetServer
from tests.support.processes import free_port, outbox_env, run_cli, start, stop, wait_ready

# A recorded http.request answer is cut at this many bytes (OUTBOX_HTTP_MAX_RESPONSE_BYTES).
MAX_RESPONSE_BYTES = 2048
SENDER = "Reports <reports@agents.mail.example.com>"


@dataclass(frozen=True)
class ScriptedCall:
    name: str
    agent: str
    envelope: dict[str, Any]
    prefer: str | None = "wait=30"


@dataclass
class LiveAnswer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Recorded:
    workdir: Path
    export: Path
    target: TargetServer
    keys: dict[str, str]
    calls: dict[str, ScriptedCall]
    live: dict[str, LiveAnswer] = field(default_factory=dict)
    mcp_call: tuple[str, dict[str, Any]] = ("", {})
    mcp_live: types.CallToolResult | None = None
    mcp_tools: list[dict[str, Any]] = field(default_factory=list)
    hostile: dict[str, LiveAnswer] = field(default_factory=dict)
    target_hits: int = 0
    mails: int = 0

    def exported_actions(self) -> dict[str, dict[str, Any]]:
        lines = [json.loads(line) for line in self.export.read_text(encoding="utf-8").splitlines()]
        return {line["action"]["id"]: line["action"] for line in lines if "action" in line}


def scripted_calls(target: str) -> list[ScriptedCall]:
    http = "http.request"
    return [
        ScriptedCall(
            "text",
            "writer",
            {"tool": http, "args": {"method": "POST", "url": f"{target}/orders", "json": {"sku": "A1"}}},
        ),
        ScriptedCall("bytes", "writer", {"tool": http, "args": {"method": "GET", "url": f"{target}/bytes/ff00fe80c3"}}),
        ScriptedCall("truncated", "writer", {"tool": http, "args": {"method": "GET", "url": f"{target}/big/5000"}}),
        ScriptedCall("denied", "writer", {"tool": http, "args": {"method": "GET", "url": f"{target}/admin/users"}}),
        ScriptedCall(
            "mail",
            "mailer",
            {
                "tool": "email.send",
                "args": {
                    "from": SENDER,
                    "to": ["ann@example.net"],
                    "subject": "Recorded",
                    "text": "Hello.\n",
                    "category": "transactional",
                },
            },
        ),
        ScriptedCall(
            "approval", "writer", {"tool": http, "args": {"method": "DELETE", "url": f"{target}/orders/7"}}, "wait=1"
        ),
        ScriptedCall(
            "stamped",
            "writer",
            {
                "tool": http,
                "args": {
                    "method": "POST",
                    "url": f"{target}/events",
                    "json": {"n": 1, "sent_at": "2026-12-04T10:00:00Z"},
                },
            },
        ),
    ]


def post(
    url: str, key: str | None, idem: str | None, body: Any, prefer: str | None = None, raw: bytes | None = None
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if idem is not None:
        headers["Idempotency-Key"] = idem
    if prefer is not None:
        headers["Prefer"] = prefer
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(f"{url}/v1/actions", content=content, headers=headers, timeout=70)


def answer_of(response: httpx.Response) -> LiveAnswer:
    kept = ("content-type", "retry-after", "preference-applied", "idempotent-replayed", "www-authenticate", "location")
    return LiveAnswer(
        response.status_code, {h: response.headers[h] for h in kept if h in response.headers}, response.json()
    )


def list_mcp_tools(url: str, key: str) -> list[dict[str, Any]]:
    async def scenario() -> list[dict[str, Any]]:
        async with mcp_client(f"{url}/mcp", key) as client:
            return [tool.model_dump(mode="json") for tool in (await client.list_tools()).tools]

    return asyncio.run(scenario())


def call_mcp(
    url: str, key: str | None, name: str, arguments: dict[str, Any], meta: dict[str, Any] | None = None
) -> types.CallToolResult:
    async def scenario() -> types.CallToolResult:
        async with mcp_client(f"{url}/mcp", key) as client:
            return await client.call_tool(name, arguments, meta=meta)  # type: ignore[arg-type]

    return asyncio.run(scenario())


# Hostile inputs, sent to the live server and the twin alike: (body or raw bytes, key sent).
HOSTILE: dict[str, tuple[Any, bytes | None, bool]] = {
    "bad-json": (None, b'{"tool": "http.request", "args": ', True),
    "nan": (None, b'{"tool": "http.request", "args": {"n": NaN}}', True),
    "not-an-object": (["http.request"], None, True),
    "missing-key": ({"tool": "http.request", "args": {}}, None, False),
    "unknown-tool": ({"tool": "shell.exec", "args": {"cmd": "rm -rf /"}}, None, True),
    "extra-field": ({"tool": "http.request", "args": {}, "sudo": True}, None, True),
}
# Refused as live only when the twin has the tools' definitions (`--policy`).
HOSTILE_ARGS: dict[str, tuple[Any, bytes | None, bool]] = {
    "bad-method": ({"tool": "http.request", "args": {"method": "FETCH", "url": "http://127.0.0.1:9/x"}}, None, True),
    "missing-url": ({"tool": "http__request", "args": {"method": "GET"}}, None, True),
}


def _record_hostile(recorded: Recorded, url: str) -> None:
    key = recorded.keys["writer"]
    for name, (body, raw, with_key) in {**HOSTILE, **HOSTILE_ARGS}.items():
        recorded.hostile[name] = answer_of(post(url, key, f"hostile-{name}" if with_key else None, body, raw=raw))
    recorded.hostile["no-token"] = answer_of(post(url, None, "x", {"tool": "http.request", "args": {}}))
    tools = httpx.get(f"{url}/v1/tools", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    recorded.hostile["tools"] = answer_of(tools)
    recorded.hostile["wrong-token"] = answer_of(post(url, "not-a-key", "x", {"tool": "http.request", "args": {}}))


def _record(workdir: Path, target: TargetServer) -> Recorded:
    shutil.copytree(POLICIES, workdir / "policies")
    env = outbox_env(OUTBOX_HTTP_MAX_RESPONSE_BYTES=str(MAX_RESPONSE_BYTES), OUTBOX_DNS_TIMEOUT_SECONDS="1")
    keys = {
        "writer": run_cli(["agents", "create", "writer", "--role", "http-writer"], env, workdir),
        "mailer": run_cli(["agents", "create", "mailer", "--role", "mailer"], env, workdir),
    }
    calls = scripted_calls(target.base_url)
    recorded = Recorded(workdir, workdir / "export.jsonl", target, keys, {c.name: c for c in calls})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(["serve", "--port", str(port)], env, workdir, workdir / "serve.log")
    try:
        wait_ready(url, process, workdir / "serve.log")
        for call in calls:
            response = post(url, keys[call.agent], f"live-{call.name}", call.envelope, call.prefer)
            recorded.live[call.name] = answer_of(response)
        arguments = {"method": "POST", "url": f"{target.base_url}/mcp-orders", "json": {"sku": "M1"}}
        recorded.mcp_call = ("http__request", arguments)
        recorded.mcp_live = call_mcp(url, keys["writer"], *recorded.mcp_call)
        recorded.mcp_tools = list_mcp_tools(url, keys["writer"])
        _record_hostile(recorded, url)
        run_cli(["audit", "export", "--output", str(recorded.export)], env, workdir)
    finally:
        stop(process)
    recorded.target_hits = len(target.received())
    recorded.mails = len(read_maildir(workdir / ".outbox" / "maildir"))
    return recorded


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    target = TargetServer()
    target.start()
    try:
        yield _record(tmp_path_factory.mktemp("recorded"), target)
    finally:
        target.stop()


@dataclass
class Twin:
    url: str
    token: str
    session: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    workdir: Path

    def post(self, call: ScriptedCall, idem: str, key: str | None = None) -> httpx.Response:
        return post(self.url, key or self.token, idem, call.envelope, call.prefer)

    def session_calls(self) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.session.read_text(encoding="utf-8").splitlines()]
        return [line for line in lines if line["record"] == "call"]


@pytest.fixture
def start_twin(recorded: Recorded, tmp_path: Path) -> Iterator[Any]:
    running: list[Twin] = []

    def launch(*extra: str) -> Twin:
        port, token = free_port(), f"twin-token-{len(running)}"
        session = tmp_path / f"session-{len(running)}.jsonl"
        # A database URL and a mail sink port the twin must never touch (test_nothing_is_opened…).
        env = outbox_env(OUTBOX_DATABASE_URL=f"sqlite:///{tmp_path / 'never.db'}", OUTBOX_REPLAY_TOKEN=token)
        args = [
            "replay",
            "serve",
            "--from",
            str(recorded.export),
            "--port",
            str(port),
            "--session",
            str(session),
            *extra,
        ]
        log = tmp_path / f"twin-{len(running)}.log"
        process = start(args, env, tmp_path, log)
        twin = Twin(f"http://127.0.0.1:{port}", token, session, process, env, tmp_path)
        running.append(twin)
        wait_ready(twin.url, process, log)
        return twin

    yield launch
    for twin in running:
        stop(twin.process)
