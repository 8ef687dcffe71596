"""`outbox policy replay` as CI runs it: its formats, --fail-on exit codes, that it runs nothing
and writes nothing, and what it says about broken inputs (exit 2, no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select

from outbox.actions.models import Action
from outbox.audit.models import AuditEvent
from tests.conftest import POLICIES
from tests.policytools.test_replay import (  # the recordings and helpers of the replay tests
    DENY_ONE_ALLOW_ANOTHER,
    Recorded,
    candidate,
    cli_database,
    recorded,
    replay,
)

__all__ = ["cli_database", "recorded"]  # fixtures used here


def test_the_table_lists_totals_first_then_only_the_changed_actions(recorded: Recorded, tmp_path: Path) -> None:
    directory = candidate(tmp_path, *DENY_ONE_ALLOW_ANOTHER)
    code, out, _err = replay("--policy", str(directory), "--from", str(recorded.export()))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"{len(recorded.ids)} recorded action(s) replayed against {directory}")
    assert lines[0].endswith("2 changed, 5 unchanged")
    assert lines.index("CHANGE         ACTIONS") < lines.index("TOOL          REPLAYED  CHANGED")
    header = next(line for line in lines if line.startswith("ACTION"))
    assert header.split() == [
        "ACTION",
        "TIME",
        "AGENT",
        "TOOL",
        "CHANGE",
        "BEFORE",
        "RULE",
        "BEFORE",
        "NOW",
        "RULE",
        "NOW",
    ]
    rows = lines[lines.index(header) + 1 :]
    assert sorted(row.split()[0] for row in rows) == sorted([recorded.ids["read"], recorded.ids["admin"]])
    read = next(row for row in rows if row.startswith(recorded.ids["read"]))
    assert "allow-to-deny" in read and "p, role:http-reader, http:127.0.0.1:*/orders/1, get, deny" in read
    assert recorded.ids["write"] not in out  # unchanged actions are counted, not listed


def test_markdown_is_a_job_summary_with_tables(recorded: Recorded, tmp_path: Path) -> None:
    directory = candidate(tmp_path, *DENY_ONE_ALLOW_ANOTHER)
    code, out, _err = replay("--policy", str(directory), "--from", str(recorded.export()), "--format", "markdown")
    assert code == 0
    assert out.startswith(f"### Policy replay: `{directory}`\n")
    assert "| Change | Actions |\n|---|---|\n| allow-to-deny | 1 |\n| deny-to-allow | 1 |\n" in out
    assert "| `reader-bot` | 2 | 2 |" in out
    # A rule's `|` would break the table: it is escaped.
    assert "get\\|head\\|post\\|put\\|patch\\|delete, deny" in out
    assert f"| `{recorded.ids['admin']}` |" in out
    nothing = replay("--policy", str(POLICIES), "--from", str(recorded.export()), "--format", "markdown")[1]
    assert "0 changed" in nothing and "| Action |" not in nothing


def test_json_has_its_documented_keys_and_output_goes_to_a_file(recorded: Recorded, tmp_path: Path) -> None:
    directory = candidate(tmp_path, *DENY_ONE_ALLOW_ANOTHER)
    out_file = tmp_path / "reports" / "replay.json"
    out_file.parent.mkdir()
    code, out, _err = replay(
        "--policy", str(directory), "--from", str(recorded.export()), "--format", "json", "--output", str(out_file)
    )
    assert code == 0 and out == ""
    report = json.loads(out_file.read_text(encoding="utf-8"))
    assert list(report) == [
        "format",
        "version",
        "candidate",
        "selection",
        "replayed",
        "changed",
        "unchanged",
        "by_change",
        "by_tool",
        "by_agent",
        "changes",
    ]
    assert (report["format"], report["version"]) == ("agent-outbox-policy-replay", 1)
    assert report["candidate"]["policy_version"].startswith("sha256:")
    change = report["changes"][0]
    assert list(change) == ["action_id", "created_at", "agent", "tool", "changes", "before", "after"]
    assert set(change["after"]) == {
        "effect",
        "policy_version",
        "rules",
        "escalation",
        "quorum",
        "expires_in_seconds",
        "deferred",
        "refusal",
    }


@pytest.mark.parametrize(
    ("fail_on", "exit_code"),
    [
        ("deny-to-allow", 1),
        ("allow-to-deny,gate-changed", 1),
        ("loosening", 1),
        ("any", 1),
        ("gate-changed", 0),
        ("approve-to-deny,now-deferred", 0),
    ],
)
def test_fail_on_exits_1_only_for_a_change_of_those_kinds(
    recorded: Recorded, tmp_path: Path, fail_on: str, exit_code: int
) -> None:
    directory = candidate(tmp_path, *DENY_ONE_ALLOW_ANOTHER)
    code, out, err = replay("--policy", str(directory), "--from", str(recorded.export()), "--fail-on", fail_on)
    assert code == exit_code
    assert "2 changed" in out  # the report is written either way
    assert ("--fail-on" in err) == (exit_code == 1)


def test_fail_on_with_no_change_exits_0(recorded: Recorded) -> None:
    assert replay("--policy", str(POLICIES), "--from", str(recorded.export()), "--fail-on", "any")[0] == 0


def _counts(recorded: Recorded) -> tuple[int, int]:
    with recorded.runtime.db.session() as session:
        actions = session.exec(select(func.count()).select_from(Action)).one()
        events = session.exec(select(func.count()).select_from(AuditEvent)).one()
    return int(actions), int(events)


@pytest.mark.usefixtures("cli_database")
def test_replay_runs_nothing_and_writes_nothing(recorded: Recorded, tmp_path: Path) -> None:
    export = recorded.export()
    # A candidate under which every recorded call would go through at once.
    directory = candidate(
        tmp_path,
        *DENY_ONE_ALLOW_ANOTHER,
        ("rules.csv", "http:127.0.0.1:*/**, delete, approve", "http:127.0.0.1:*/**, delete, allow"),
    )
    requests, mails, counts = len(recorded.target.requests), len(recorded.sink.maildir), _counts(recorded)
    for source in ([], ["--from", str(export)]):
        for output_format in ("table", "json", "markdown"):
            code, _out, err = replay("--policy", str(directory), *source, "--format", output_format)
            assert code == 0, err
    assert len(recorded.target.requests) == requests
    assert len(recorded.sink.maildir) == mails
    assert _counts(recorded) == counts


@pytest.mark.usefixtures("cli_database")
def test_events_not_sealed_yet_are_named_not_replayed(recorded: Recorded) -> None:
    code, out, err = replay("--policy", str(POLICIES))
    assert code == 0
    assert "audit event(s) are not sealed yet and are not replayed" in err
    assert out.startswith("0 recorded action(s)")


# --- Broken inputs: exit 2, a message that says what is wrong, no traceback ------------------
# (made from the shipped fixture, a real recording: the database plays no part in them)

FIXTURE = Path(__file__).parent.parent / "fixtures" / "recordings" / "quickstart.jsonl"


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def _refused(args: list[str], *expected: str) -> None:
    code, out, err = replay(*args)
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    for text in expected:
        assert text in err, err


def test_an_export_of_another_version_is_refused(tmp_path: Path) -> None:
    lines = _lines(FIXTURE)
    header = json.loads(lines[0])
    for version in (1, 3, "2", None):
        broken = tmp_path / f"v{version}.jsonl"
        broken.write_text(json.dumps({**header, "version": version}) + "\n" + "".join(lines[1:]), encoding="utf-8")
        _refused(["--policy", str(POLICIES), "--from", str(broken)], "line 1: export format version", "reads version 2")


def test_an_export_without_its_header_is_refused(tmp_path: Path) -> None:
    headless = tmp_path / "headless.jsonl"
    headless.write_text("".join(_lines(FIXTURE)[1:]), encoding="utf-8")
    _refused(["--policy", str(POLICIES), "--from", str(headless)], "not an agent-outbox export")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    _refused(["--policy", str(POLICIES), "--from", str(empty)], "the export is empty")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda lines: [*lines[:5], lines[5][: len(lines[5]) // 2]], "line 6: not a JSON object"),
        (lambda lines: [*lines[:3], "not json at all\n", *lines[3:]], "line 4: not a JSON object"),
        (lambda lines: [*lines[:3], "[1, 2]\n", *lines[3:]], "line 4: not a JSON object"),
        (lambda lines: [*lines[:3], '{"record": "bogus"}\n', *lines[3:]], "line 4: unknown record 'bogus'"),
    ],
    ids=["a line cut short", "a line that is not JSON", "a JSON array", "an unknown record"],
)
def test_a_damaged_export_is_refused_naming_the_line(tmp_path: Path, damage, message) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "broken.jsonl"
    broken.write_text("".join(damage(_lines(FIXTURE))), encoding="utf-8")
    _refused(["--policy", str(POLICIES), "--from", str(broken)], message)


def test_an_export_cut_at_a_line_end_is_replayed_with_a_loud_warning(tmp_path: Path) -> None:
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(_lines(FIXTURE)[:-4]), encoding="utf-8")
    code, out, err = replay("--policy", str(POLICIES), "--from", str(cut), "--format", "json")
    assert code == 0
    assert f"WARNING: {cut} is cut short" in err
    assert json.loads(out)["selection"]["complete"] is False
    markdown = replay("--policy", str(POLICIES), "--from", str(cut), "--format", "markdown")[1]
    assert "is cut short" in markdown


def test_an_unreadable_export_is_refused(tmp_path: Path) -> None:
    _refused(["--policy", str(POLICIES), "--from", str(tmp_path / "missing.jsonl")], "missing.jsonl")
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    _refused(["--policy", str(POLICIES), "--from", str(binary)], "not UTF-8")


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        (
            "rules.csv",
            "p, role:http-reader, http:127.0.0.1:*/**, get|head, allow",
            "p, role:http-reader",
            "the policy does not load",
        ),
        ("approvals.yaml", "  quorum: 1\n", "  quorum: many\n", "approvals.yaml does not load"),
        ("mail.yaml", "per_hour: 200", "per_hour: lots", "the tools do not load"),
        ("tools/quickstart.yaml", "tools:", "tools: [", "the tools do not load"),
    ],
)
def test_a_candidate_that_does_not_load_is_refused(tmp_path: Path, file: str, old: str, new: str, message: str) -> None:
    directory = candidate(tmp_path, (file, old, new))
    _refused(["--policy", str(directory), "--from", str(FIXTURE)], f"error: {directory}: {message}")


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    fixture = str(FIXTURE)
    _refused(["--policy", str(tmp_path / "nowhere"), "--from", fixture], "is not a directory")
    _refused(
        ["--policy", str(POLICIES), "--from", fixture, "--since", "yesterday"],
        "--since 'yesterday' is not an ISO 8601 time",
    )
    _refused(
        ["--policy", str(POLICIES), "--from", fixture, "--fail-on", "allow-to-maybe"],
        "unknown change kind(s) allow-to-maybe",
    )
    code, _out, _err = replay("--policy", str(POLICIES), "--from", fixture, "--format", "yaml")
    assert code == 2
