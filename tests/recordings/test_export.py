"""The export format (version 2): valid against its published JSON Schema, responses kept
exactly, truncation flagged, and one reader that means the same from a file and the database."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from outbox.execution.service import run_action
from outbox.recordings.export import EXPORT_VERSION, export_jsonl
from outbox.recordings.reader import RecordingError, read_database, read_export
from outbox.runtime import Runtime
from tests.support.agents import make_agent
from tests.support.audit import seal
from tests.support.calls import submit_call
from tests.support.http_target import TargetServer

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "export.schema.json").read_text())

# Bytes that are not UTF-8, and UTF-8 text holding NUL (which PostgreSQL's jsonb refuses as text).
NOT_UTF8 = bytes([0xFF, 0x00, 0xFE, 0x80, 0x41])
WITH_NUL = "a\0b é".encode()
HEADER = '{"record": "header", "format": "agent-outbox-export", "version": 2}\n'


def _traffic(runtime: Runtime, target: TargetServer) -> dict[str, str]:
    """Real calls through the service: allowed and run, denied, sent to a human."""
    key = make_agent(runtime.db, "exporter", ["http-writer"])
    calls = {
        "text": {"method": "POST", "url": f"{target.base_url}/v1/echo", "json": {"a": 1}},
        "binary": {"method": "GET", "url": f"{target.base_url}/bytes/{NOT_UTF8.hex()}"},
        "nul": {"method": "GET", "url": f"{target.base_url}/bytes/{WITH_NUL.hex()}"},
        "big": {"method": "GET", "url": f"{target.base_url}/big/5000"},
        "denied": {"method": "GET", "url": f"{target.base_url}/admin/users"},
        "approval": {"method": "DELETE", "url": f"{target.base_url}/v1/things/1"},
    }
    ids = {name: submit_call(runtime, key, "http.request", args) for name, args in calls.items()}
    for name in ("text", "binary", "nul", "big"):
        run_action(runtime, ids[name])
    seal(runtime)
    return ids


def _export(runtime: Runtime, path: Path | None = None) -> list[dict[str, Any]]:
    out = io.StringIO()
    with runtime.db.read_session() as session:
        export_jsonl(session, out)
    if path is not None:
        path.write_text(out.getvalue(), encoding="utf-8")
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.fixture
def small_responses(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(http_max_response_bytes=1024)


def test_every_record_of_a_real_export_is_valid_against_the_published_schema(
    small_responses: Runtime, target_server: TargetServer
) -> None:
    _traffic(small_responses, target_server)
    records = _export(small_responses)
    validator = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)

    for record in records:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(record)]
        assert errors == [], record
    assert records[0]["version"] == EXPORT_VERSION
    assert records[-1] == {"record": "end", "events": len(records) - 2, "actions": 6}
    # A schema that accepted anything would pass the loop above: it must refuse a broken record.
    broken = dict(records[1], seq="one")
    assert list(validator.iter_errors(broken))
    assert list(validator.iter_errors({**records[0], "version": 1}))


def test_responses_are_exported_exactly_with_bytes_that_are_not_text_in_base64(
    small_responses: Runtime, target_server: TargetServer
) -> None:
    ids = _traffic(small_responses, target_server)
    actions = {r["action"]["id"]: r["action"] for r in _export(small_responses) if "action" in r}

    text = actions[ids["text"]]["response"]
    assert json.loads(text["body"])["body"] == '{"a":1}'
    assert "body_base64" not in text
    for name, sent in (("binary", NOT_UTF8), ("nul", WITH_NUL)):
        response = actions[ids[name]]["response"]
        assert "body" not in response
        assert base64.b64decode(response["body_base64"]) == sent
        assert actions[ids[name]]["response_truncated"] is False


def test_a_response_the_tool_cut_at_its_cap_is_flagged(small_responses: Runtime, target_server: TargetServer) -> None:
    ids = _traffic(small_responses, target_server)
    actions = {r["action"]["id"]: r["action"] for r in _export(small_responses) if "action" in r}

    big = actions[ids["big"]]
    assert big["response"]["truncated"] is True
    assert big["response"]["body"] == "x" * 1024
    assert big["response_truncated"] is True
    assert actions[ids["text"]]["response_truncated"] is False


def test_the_export_carries_decision_rules_gate_and_the_agents_view(
    runtime: Runtime, target_server: TargetServer
) -> None:
    ids = _traffic(runtime, target_server)
    actions = {r["action"]["id"]: r["action"] for r in _export(runtime) if "action" in r}

    denied = actions[ids["denied"]]
    assert denied["decision"]["effect"] == "deny"
    assert (
        denied["decision"]["rules"][0]["rule"]
        == "p, role:http-reader, http:127.0.0.1:*/admin/**, get|head|post|put|patch|delete, deny"
    )
    # The agent was shown the same problem document as its 403.
    assert denied["view"]["problem"] == denied["problem"]
    assert denied["problem"]["status"] == 403
    approval = actions[ids["approval"]]
    assert approval["status"] == "awaiting_approval"
    assert approval["approval"]["quorum"] >= 1 and approval["approval"]["status"] == "pending"
    assert approval["view"]["links"]["approval"] == f"/v1/admin/approvals/{ids['approval']}"
    assert actions[ids["text"]]["agent"] == "exporter"
    assert actions[ids["text"]]["agent_roles"] == ["role:http-writer"]
    assert actions[ids["text"]]["request"]["body"] == "(test)"


def test_the_database_and_its_export_read_as_the_same_recording(
    runtime: Runtime, target_server: TargetServer, tmp_path: Path
) -> None:
    _traffic(runtime, target_server)
    path = tmp_path / "export.jsonl"
    _export(runtime, path)

    from_file = read_export(path)
    with runtime.db.read_session() as session:
        from_db = read_database(session)

    assert from_file.complete and from_db.complete
    assert [a.id for a in from_file.actions] == [a.id for a in from_db.actions]
    for left, right in zip(from_file.actions, from_db.actions, strict=True):
        assert left.outcome() == right.outcome()
        assert (left.response, left.view, left.args, left.roles) == (
            right.response,
            right.view,
            right.args,
            right.roles,
        )
        assert [e.type for e in left.events] == [e.type for e in right.events]
    outcomes = {a.decision["effect"] for a in from_file.actions}
    assert outcomes == {"allow", "deny", "approve"}
    approval = next(a for a in from_file.actions if a.decision["effect"] == "approve")
    assert approval.outcome().quorum == approval.approval["quorum"]  # type: ignore[index]


def test_an_export_cut_short_reads_as_incomplete(runtime: Runtime, target_server: TargetServer, tmp_path: Path) -> None:
    _traffic(runtime, target_server)
    path = tmp_path / "export.jsonl"
    _export(runtime, path)
    lines = path.read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[: len(lines) // 2]))

    recording = read_export(cut)

    assert not recording.complete
    assert recording.events == len(lines) // 2 - 1
    assert read_export(path).complete


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no header line"),
        ('{"id": 1, "seq": 1, "type": "action.received"}\n', "not an agent-outbox export"),
        ('{"record": "header", "format": "agent-outbox-export", "version": 3}\n', "format version 3"),
        ('{"record": "header", "format": "agent-outbox-export", "version": "2"}\n', "format version '2'"),
        ('{"record": "header", "format": "something-else", "version": 2}\n', "not an agent-outbox export"),
        ("[1, 2]\n", "line 1: not a JSON object"),
        ('{"record": "header", "format": "agent-outbox-export", "version": 2}\n{"record": "eve', "line 2: not a JSON"),
        (
            '{"record": "header", "format": "agent-outbox-export", "version": 2}\n{"record": "party"}\n',
            "unknown record",
        ),
        (
            HEADER + '{"record": "event", "action_id": "act_1", "action": {"id": "act_1"}}\n',
            "line 2: an event or action is missing a field",
        ),
    ],
)
def test_a_file_that_is_not_a_readable_export_is_refused_naming_the_line(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "export.jsonl"
    path.write_text(content, encoding="utf-8")

    with pytest.raises(RecordingError) as refused:
        read_export(path)

    assert message in str(refused.value)


def test_a_file_that_is_not_utf8_or_missing_is_refused(tmp_path: Path) -> None:
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe{}")
    with pytest.raises(RecordingError, match="not UTF-8"):
        read_export(binary)
    with pytest.raises(RecordingError, match="No such file"):
        read_export(tmp_path / "absent.jsonl")
