"""Calls recorded over MCP replay like calls over HTTP: their arguments are read from the
JSON-RPC message as received (`params.arguments`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from outbox.policytools.replay import received_args
from outbox.recordings.reader import read_export
from tests.mcp.conftest import RunningOutbox, make_outbox, mcp_client, outbox
from tests.policytools.replay_support import export_text
from tests.policytools.test_replay import DENY_ONE_ALLOW_ANOTHER, candidate, changed, replay_json
from tests.support.http_target import TargetServer

__all__ = ["make_outbox", "outbox"]  # fixtures used here


def call_over_mcp(running: RunningOutbox, key: str, arguments: dict[str, Any]) -> str:
    async def scenario() -> str:
        async with mcp_client(running.mcp_url, key) as client:
            result = await client.call_tool("http__request", arguments)
            assert result.structured_content is not None
            return str(result.structured_content["id"])

    return asyncio.run(scenario())


def test_calls_recorded_over_mcp_are_re_decided_from_the_message_as_received(
    outbox: RunningOutbox, target_server: TargetServer, tmp_path: Path
) -> None:
    key = outbox.agent("reader-bot", "http-reader")
    read_args = {"method": "GET", "url": f"{target_server.base_url}/orders/1"}
    read = call_over_mcp(outbox, key, read_args)
    admin = call_over_mcp(outbox, key, {"method": "GET", "url": f"{target_server.base_url}/admin/users"})
    export = tmp_path / "export.jsonl"
    export.write_text(export_text(outbox.runtime), encoding="utf-8")

    recorded = {a.id: a for a in read_export(export).actions}
    assert recorded[read].request["face"] == "mcp" and "jsonrpc" in recorded[read].request["body"]
    assert received_args(recorded[read]) == read_args
    report = replay_json("--policy", str(candidate(tmp_path, *DENY_ONE_ALLOW_ANOTHER)), "--from", str(export))
    assert changed(report) == {read: ["allow-to-deny"], admin: ["deny-to-allow"]}
