"""`outbox replay serve` end to end: a real recording (conftest.py) served by the twin as a real
process, a scripted client sending the same calls with new keys over HTTP and MCP."""

from __future__ import annotations

import ast
import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from outbox.canonical import canonical_json
from outbox.mail.sending.sink import read_maildir
from tests.replay.conftest import (
    HOSTILE,
    HOSTILE_ARGS,
    MAX_RESPONSE_BYTES,
    Recorded,
    call_mcp,
    list_mcp_tools,
    post,
)
from tests.support.processes import OUTBOX, free_port, outbox_env, run_cli, wait_until

pytestmark = pytest.mark.slow

RECORDED_ORDER = ("text", "bytes", "truncated", "denied", "mail", "approval", "stamped")


def assert_nothing_reached_the_world(recorded: Recorded) -> None:
    assert len(recorded.target.received()) == recorded.target_hits
    assert len(read_maildir(recorded.workdir / ".outbox" / "maildir")) == recorded.mails


def test_the_same_calls_with_new_keys_get_the_recorded_answers_byte_for_byte(
    recorded: Recorded, start_twin: Any
) -> None:
    twin = start_twin()
    exported = recorded.exported_actions()
    for name in RECORDED_ORDER:
        call, live = recorded.calls[name], recorded.live[name]
        answer = twin.post(call, f"new-model-{name}")
        assert answer.status_code == live.status, (name, answer.text)
        assert answer.json() == live.body, name
        for header in ("content-type", "preference-applied", "location"):
            assert answer.headers.get(header) == live.headers.get(header), (name, header)
        assert "idempotent-replayed" not in answer.headers
        action_id = answer.json().get("id") or answer.json().get("action_id")
        if answer.status_code != 403:
            # The tool's response exactly as exported (base64 bodies and truncation flags included).
            response = answer.json()["result"]["response"] if answer.json()["result"] else None
            assert canonical_json(response) == canonical_json(exported[action_id]["response"]), name
            read = httpx.get(f"{twin.url}/v1/actions/{action_id}", headers={"Authorization": f"Bearer {twin.token}"})
            assert read.json() == exported[action_id]["view"]
    assert_nothing_reached_the_world(recorded)


def test_non_utf8_bodies_and_truncation_are_answered_as_recorded(recorded: Recorded, start_twin: Any) -> None:
    twin = start_twin()
    binary = twin.post(recorded.calls["bytes"], "b").json()["result"]["response"]
    assert binary["body_base64"] == "/wD+gMM="  # ff 00 fe 80 c3
    assert "body" not in binary
    cut = twin.post(recorded.calls["truncated"], "t").json()["result"]["response"]
    assert cut["truncated"] is True
    assert len(cut["body"]) == MAX_RESPONSE_BYTES


def test_denied_and_awaiting_approval_answer_with_the_recorded_statuses(recorded: Recorded, start_twin: Any) -> None:
    twin = start_twin()
    denied = twin.post(recorded.calls["denied"], "d")
    assert denied.status_code == 403
    assert denied.headers["content-type"] == "application/problem+json"
    assert denied.json()["type"].endswith("/denied-by-policy")
    waiting = twin.post(recorded.calls["approval"], "a")
    assert waiting.status_code == 202
    assert waiting.json()["status"] == "awaiting_approval"
    assert waiting.headers["preference-applied"] == "wait=1"


def test_an_mcp_call_gets_the_tool_result_the_live_server_gave(recorded: Recorded, start_twin: Any) -> None:
    twin = start_twin()
    result = call_mcp(twin.url, twin.token, *recorded.mcp_call)
    live = recorded.mcp_live
    assert live is not None
    assert result.structured_content == live.structured_content
    assert result.content == live.content
    assert result.is_error == live.is_error
    assert result.meta == live.meta
    # A call recorded over HTTP, made over MCP: the live face's shaping of the recorded answer.
    denied = call_mcp(twin.url, twin.token, "http__request", recorded.calls["denied"].envelope["args"])
    assert denied.is_error is True
    assert denied.structured_content is not None
    assert denied.structured_content["status"] == "denied"
    assert_nothing_reached_the_world(recorded)


def test_an_unrecorded_call_is_not_in_the_recording_and_logged_as_a_divergence(
    recorded: Recorded, start_twin: Any
) -> None:
    twin = start_twin()
    text = recorded.calls["text"]
    changed = {**text.envelope, "args": {**text.envelope["args"], "json": {"sku": "B2"}}}
    answer = post(twin.url, twin.token, "new", changed)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["type"] == "https://agent-outbox.dev/problems/not-in-recording"
    assert recorded.live["text"].body["id"] in problem["detail"]
    assert problem["nearest"] == {
        "action_id": recorded.live["text"].body["id"],
        "tool": "http.request",
        "differing": ["args.json.sku"],
    }
    over_mcp = call_mcp(twin.url, twin.token, "http__request", {"method": "GET", "url": "http://127.0.0.1:9/other"})
    assert over_mcp.is_error is True
    assert "Not in the recording" in over_mcp.content[0].text  # type: ignore[union-attr]
    [http_line, mcp_line] = twin.session_calls()
    assert http_line["outcome"] == "diverged"
    assert http_line["face"] == "http"
    assert http_line["nearest"]["differing"] == ["args.json.sku"]
    assert http_line["args"] == changed["args"]
    assert http_line["agent"] == "replay"
    assert mcp_line["outcome"] == "diverged"
    assert mcp_line["face"] == "mcp"
    assert "args.url" in mcp_line["nearest"]["differing"]
    assert_nothing_reached_the_world(recorded)


def stamped_later(recorded: Recorded) -> dict[str, Any]:
    stamped = recorded.calls["stamped"].envelope
    return {**stamped, "args": {**stamped["args"], "json": {"n": 1, "sent_at": "2027-01-01T00:00:00Z"}}}


def test_an_ignored_field_lets_a_call_that_differs_only_there_match(recorded: Recorded, start_twin: Any) -> None:
    exact = start_twin()
    missed = post(exact.url, exact.token, "s", stamped_later(recorded), "wait=30")
    assert missed.status_code == 404
    assert missed.json()["nearest"]["differing"] == ["args.json.sent_at"]

    lenient = start_twin("--ignore", "args.json.sent_at")
    matched = post(lenient.url, lenient.token, "s", stamped_later(recorded), "wait=30")
    assert matched.status_code == 200
    assert matched.json() == recorded.live["stamped"].body
    [line] = lenient.session_calls()
    assert line["outcome"] == "matched"
    assert line["action_id"] == recorded.live["stamped"].body["id"]


def test_a_retry_with_the_same_key_answers_as_the_first_time(recorded: Recorded, start_twin: Any) -> None:
    twin = start_twin()
    first = twin.post(recorded.calls["text"], "k1")
    again = twin.post(recorded.calls["text"], "k1")
    assert again.status_code == first.status_code
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    # A new key for the same call: the recording holds one such call, so it answers again.
    third = twin.post(recorded.calls["text"], "k2")
    assert third.json() == first.json()
    reused = post(twin.url, twin.token, "k1", recorded.calls["bytes"].envelope)
    assert reused.status_code == 422
    assert reused.json()["type"].endswith("/idempotency-key-reused")


def test_hostile_input_gets_the_problem_the_live_service_gives(recorded: Recorded, start_twin: Any) -> None:
    twin = start_twin()
    for name, (body, raw, with_key) in HOSTILE.items():
        answer = post(twin.url, twin.token, f"hostile-{name}" if with_key else None, body, raw=raw)
        live = recorded.hostile[name]
        assert answer.status_code == live.status, (name, answer.text)
        assert answer.headers["content-type"] == live.headers["content-type"], name
        if name == "unknown-tool":
            # The hint lists the tools: the live catalogue there, the recorded one here.
            for field in ("type", "title", "status", "detail", "errors"):
                assert answer.json()[field] == live.body[field], name
            assert answer.json()["hint"].startswith("Use one of: email.send, http.request.")
        else:
            assert answer.json() == live.body, name
    assert_nothing_reached_the_world(recorded)


def test_calls_without_the_token_are_refused_as_live_on_both_faces(recorded: Recorded, start_twin: Any) -> None:
    twin = start_twin()
    body = {"tool": "http.request", "args": {}}
    for name, key in (("no-token", None), ("wrong-token", "not-a-key")):
        refused = post(twin.url, key, "x", body)
        live = recorded.hostile[name]
        assert refused.status_code == 401
        assert refused.json() == live.body
        assert refused.headers["www-authenticate"] == live.headers["www-authenticate"]
    # A recorded agent's own key is not the twin's token.
    assert post(twin.url, recorded.keys["writer"], "x", body).status_code == 401
    for key in (None, "not-a-key"):
        mcp = httpx.post(
            f"{twin.url}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Authorization": f"Bearer {key}"} if key else {},
        )
        assert mcp.status_code == 401
        assert mcp.json()["type"].endswith("/unauthorized")
        assert mcp.headers["www-authenticate"].startswith("Bearer resource_metadata=")
    tools = httpx.get(f"{twin.url}/v1/tools")
    assert tools.status_code == 401
    assert twin.session_calls() == []


def test_a_generated_token_and_the_default_session_log_are_printed_at_start(recorded: Recorded, tmp_path: Path) -> None:
    port = free_port()
    args = [*OUTBOX, "replay", "serve", "--from", str(recorded.export), "--port", str(port)]
    process = subprocess.Popen(args, env=outbox_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        lines: list[str] = []
        assert process.stdout is not None
        while not any(line.startswith("token") for line in lines):
            lines.append(process.stdout.readline().decode())
        token = lines[-1].rsplit(" ", 1)[-1].strip()
        assert len(token) >= 40
        [session_line] = [line for line in lines if line.startswith("session log: ")]
        session = Path(session_line.removeprefix("session log: ").strip())
        assert session.parent == Path(".outbox") / "replay"
        assert wait_until(lambda: _ready(port), timeout=30)
        tools = httpx.get(f"http://127.0.0.1:{port}/v1/tools", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert tools.status_code == 200
        assert [t["name"] for t in tools.json()["tools"]] == ["email.send", "http.request"]
        # The session log holds recorded arguments: its owner's only.
        assert (tmp_path / session).stat().st_mode & 0o777 == 0o600
        assert json.loads((tmp_path / session).read_text().splitlines()[0])["record"] == "session"
    finally:
        process.terminate()
        process.wait(timeout=30)
        assert process.stdout is not None
        process.stdout.close()


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_nothing_is_opened_no_database_no_mail_sink_no_workers(recorded: Recorded, start_twin: Any) -> None:
    # With the tools' definitions loaded too (--policy): definitions only, nothing that runs.
    twin = start_twin("--policy", str(recorded.workdir / "policies"))
    for name in RECORDED_ORDER:
        twin.post(recorded.calls[name], f"n-{name}")
    call_mcp(twin.url, twin.token, *recorded.mcp_call)
    # The database it was pointed at was never created, nor the embedded data directory.
    assert not (twin.workdir / "never.db").exists()
    assert not (twin.workdir / ".outbox" / "outbox.db").exists()
    # The embedded mail sink's port is free: no sink was started.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", int(twin.env["OUTBOX_MAIL_SINK_PORT"])))
    # No worker processes: the twin started no child process.
    tasks = Path(f"/proc/{twin.process.pid}/task").iterdir()
    assert all((task / "children").read_text().strip() == "" for task in tasks)
    assert_nothing_reached_the_world(recorded)


# What acts in the live service: the composition root, its database, workers, tool providers,
# the executors and the embedded mail sink. The twin's code names none of them.
ACTING_MODULES = (
    "outbox.runtime",
    "outbox.db",
    "workers",
    "outbox.execution",
    "outbox.jobs",
    "outbox.deliveries",
    "outbox.tools.providers",
    "outbox.tools.http_request",
    "outbox.mail",
    "outbox.commands",
)


def test_the_twin_code_builds_nothing_that_acts() -> None:
    package = Path(__file__).parents[2] / "outbox" / "replay"
    for source in [*package.glob("*.py"), package.parent / "cli" / "replay.py"]:
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(ACTING_MODULES), f"{source.name} imports {name}"


def test_the_report_counts_matched_and_diverged_calls_and_a_candidate_policys_changes(
    recorded: Recorded, start_twin: Any, tmp_path: Path
) -> None:
    twin = start_twin()
    for name in ("text", "bytes", "denied"):
        twin.post(recorded.calls[name], f"r-{name}")
    post(
        twin.url,
        twin.token,
        "r-new",
        {"tool": "http.request", "args": {"method": "GET", "url": "http://127.0.0.1:9/x"}},
    )
    env = outbox_env()
    report = json.loads(
        run_cli(["replay", "report", "--session", str(twin.session), "--format", "json"], env, tmp_path)
    )
    assert (report["calls"], report["matched"], report["diverged"], report["refused"]) == (4, 3, 1, 0)
    assert report["matched_actions"] == [
        recorded.live[n].body.get("id") or recorded.live[n].body["action_id"] for n in ("text", "bytes", "denied")
    ]
    [divergence] = report["divergences"]
    assert divergence["nearest"]["tool"] == "http.request"

    # A candidate that denies POST /orders and allows the admin reads: both show, nothing else.
    candidate = tmp_path / "candidate"
    shutil.copytree(recorded.workdir / "policies", candidate)
    rules = (candidate / "rules.csv").read_text()
    rules = rules.replace("p, role:http-reader, http:127.0.0.1:*/admin/**, get|head|post|put|patch|delete, deny\n", "")
    rules += "p, role:http-writer, http:127.0.0.1:*/orders, post, deny\n"
    rules += "p, role:http-reader, http:127.0.0.1:*/admin/**, get, allow\n"
    (candidate / "rules.csv").write_text(rules)
    args = ["replay", "report", "--session", str(twin.session), "--policy", str(candidate), "--format", "json"]
    changes = json.loads(run_cli(args, env, tmp_path))["policy"]["changes"]
    assert {(c["action_id"], tuple(c["changes"])) for c in changes} == {
        (recorded.live["text"].body["id"], ("allow-to-deny",)),
        (recorded.live["denied"].body["action_id"], ("deny-to-allow",)),
    }
    table = run_cli(["replay", "report", "--session", str(twin.session), "--policy", str(candidate)], env, tmp_path)
    assert "4 call(s): 3 matched, 1 diverged, 0 refused" in table
    assert "allow-to-deny" in table
    markdown = run_cli(["replay", "report", "--session", str(twin.session), "--format", "markdown"], env, tmp_path)
    assert markdown.startswith("### Replay session")


def test_with_the_policy_directory_tools_list_and_invalid_calls_are_refused_exactly_as_live(
    recorded: Recorded, start_twin: Any
) -> None:
    twin = start_twin("--policy", str(recorded.workdir / "policies"), "--agent", "writer")
    tools = httpx.get(f"{twin.url}/v1/tools", headers={"Authorization": f"Bearer {twin.token}"})
    assert tools.json() == recorded.hostile["tools"].body
    for name, (body, raw, with_key) in {**HOSTILE, **HOSTILE_ARGS}.items():
        answer = post(twin.url, twin.token, f"hostile-{name}" if with_key else None, body, raw=raw)
        assert (answer.status_code, answer.json()) == (recorded.hostile[name].status, recorded.hostile[name].body), name
    assert list_mcp_tools(twin.url, twin.token) == recorded.mcp_tools
    # --agent writer: the mailer's recorded call is not among the answers.
    assert twin.post(recorded.calls["mail"], "m").status_code == 404
    assert twin.post(recorded.calls["text"], "t").json() == recorded.live["text"].body
    refused = [line for line in twin.session_calls() if line["outcome"] == "refused"]
    assert {line["tool"] for line in refused} >= {"shell.exec", "http.request"}


def test_over_mcp_a_retry_with_the_same_meta_key_is_replayed_and_approval_stays_pending(
    recorded: Recorded, start_twin: Any
) -> None:
    twin = start_twin()
    meta = {"dev.agent-outbox/idempotency_key": "mcp-1"}
    first = call_mcp(twin.url, twin.token, *recorded.mcp_call, meta)
    again = call_mcp(twin.url, twin.token, *recorded.mcp_call, meta)
    assert first.meta is not None and again.meta is not None
    assert (first.meta["dev.agent-outbox/replayed"], again.meta["dev.agent-outbox/replayed"]) == (False, True)
    assert again.structured_content == first.structured_content
    assert again.content[0].text.startswith("Replayed:")  # type: ignore[union-attr]
    waiting = call_mcp(twin.url, twin.token, "http__request", recorded.calls["approval"].envelope["args"])
    assert waiting.is_error is False
    assert waiting.structured_content is not None
    assert waiting.structured_content["status"] == "awaiting_approval"
    unread = httpx.get(f"{twin.url}/v1/actions/act_not_answered", headers={"Authorization": f"Bearer {twin.token}"})
    assert unread.status_code == 404
    assert unread.json()["type"].endswith("/action-not-found")
    assert [line["outcome"] for line in twin.session_calls()] == ["matched", "matched", "matched"]


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--ignore", "tool"], "the tool is always matched"),
        (["--match", "exact", "--ignore", "args.x"], "--match exact ignores no field"),
        (["--match", "ignore"], "needs at least one --ignore"),
        (["--policy", "/nonexistent/policies"], "--policy /nonexistent/policies"),
    ],
)
def test_a_twin_asked_for_a_rule_it_cannot_keep_refuses_to_start(
    recorded: Recorded, tmp_path: Path, extra: list[str], says: str
) -> None:
    args = [*OUTBOX, "replay", "serve", "--from", str(recorded.export), "--port", str(free_port()), *extra]
    result = subprocess.run(
        args, env=outbox_env(), cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert says in result.stderr


def test_an_export_that_is_not_one_is_refused_with_the_line(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.jsonl"
    bogus.write_text('{"record": "event"}\n')
    args = [*OUTBOX, "replay", "serve", "--from", str(bogus), "--port", str(free_port())]
    result = subprocess.run(
        args, env=outbox_env(), cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "not an agent-outbox export" in result.stderr
