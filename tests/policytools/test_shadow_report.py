"""`outbox policy shadow report`: the shadow policy's disagreements, from the recorded actions
(SQLite and PostgreSQL), as a table, JSON and markdown, within a time window."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col
from typer.testing import CliRunner

from outbox.actions.models import Action
from outbox.cli.main import app
from outbox.config import get_settings
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from tests.actions.test_shadow import SHADOW_DENY, shadow_of
from tests.support.agents import make_agent
from tests.support.calls import submit_call
from tests.support.dispatchers import RecordingDispatcher

runner = CliRunner()


@pytest.fixture
def recorded(
    policy_dir: Path, tmp_path: Path, make_runtime: Callable[..., Runtime], database_url: str
) -> Iterator[dict[str, str]]:
    """Four calls decided live and by a shadow that denies reads under /reports/ and wants three
    approvers for deletes under /prod/; the CLI reads the same database."""
    runtime = make_runtime(RecordingDispatcher(), shadow_policy_dir=shadow_of(policy_dir, tmp_path / "shadow"))
    reader = make_agent(runtime.db, "reader-bot", ["http-reader"])
    writer = make_agent(runtime.db, "writer-bot", ["http-writer"])

    def call(key: str, method: str, path: str) -> str:
        return submit_call(runtime, key, "http.request", {"method": method, "url": f"http://127.0.0.1:9{path}"})

    ids = {
        "agrees": call(reader, "GET", "/orders/1"),
        "denied-by-shadow": call(reader, "GET", "/reports/q3"),
        "gate": call(writer, "DELETE", "/prod/orders/7"),
        "old": call(writer, "GET", "/reports/2019"),
    }
    with runtime.db.session() as session:
        old = utcnow() - timedelta(days=30)
        session.execute(update(Action).where(col(Action.id) == ids["old"]).values(created_at=old))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OUTBOX_DATABASE_URL", database_url)
        get_settings.cache_clear()
        yield ids
    get_settings.cache_clear()


def report(*args: str) -> str:
    result = runner.invoke(app, ["policy", "shadow", "report", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_json_report_totals_per_change_tool_and_agent_then_lists_the_disagreements(
    recorded: dict[str, str],
) -> None:
    found: dict[str, Any] = json.loads(report("--format", "json"))

    assert (found["decided"], found["disagreeing"]) == (4, 3)
    assert found["by_change"] == {"allow-to-deny": 2, "gate-changed": 1}
    assert found["by_tool"] == {"http.request": {"decided": 4, "disagreeing": 3}}
    assert found["by_agent"] == {
        "reader-bot": {"decided": 2, "disagreeing": 1},
        "writer-bot": {"decided": 2, "disagreeing": 2},
    }
    rows = {row["action_id"]: row for row in found["disagreements"]}
    assert set(rows) == {recorded["denied-by-shadow"], recorded["gate"], recorded["old"]}
    denied = rows[recorded["denied-by-shadow"]]
    assert (denied["agent"], denied["tool"], denied["changes"]) == ("reader-bot", "http.request", ["allow-to-deny"])
    assert denied["live"]["rules"] == ["p, role:http-reader, http:127.0.0.1:*/**, get|head, allow"]
    assert denied["shadow"]["rules"] == [SHADOW_DENY]
    assert (rows[recorded["gate"]]["live"]["quorum"], rows[recorded["gate"]]["shadow"]["quorum"]) == (2, 3)


def test_since_and_until_bound_the_window(recorded: dict[str, str]) -> None:
    recent = json.loads(report("--format", "json", "--since", (utcnow() - timedelta(days=1)).isoformat()))
    old = json.loads(report("--format", "json", "--until", (utcnow() - timedelta(days=1)).isoformat()))

    assert recent["decided"] == 3
    assert recorded["old"] not in {row["action_id"] for row in recent["disagreements"]}
    assert [row["action_id"] for row in old["disagreements"]] == [recorded["old"]]


def test_the_table_and_markdown_name_each_disagreeing_action_with_both_outcomes(recorded: dict[str, str]) -> None:
    table = report()
    markdown = report("--format", "markdown")

    assert "4 call(s) decided by the shadow policy" in table
    assert "3 disagree" in table
    for text in (table, markdown):
        assert recorded["denied-by-shadow"] in text
        assert recorded["agrees"] not in text
        assert f"deny by {SHADOW_DENY}" in text
        assert "approve (quorum 3)" in text
    # A rule's `|` is escaped in a markdown cell, so the table keeps its columns.
    assert "allow by p, role:http-reader, http:127.0.0.1:*/**, get|head, allow" in table
    assert "allow by p, role:http-reader, http:127.0.0.1:*/**, get\\|head, allow" in markdown
    assert "| action | time | agent | tool | change | live | shadow |" in markdown
    assert "### Change kind" in markdown


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_an_empty_window_reports_nothing_to_compare(recorded: dict[str, str]) -> None:
    since = (utcnow() + timedelta(days=1)).isoformat()
    assert "0 call(s) decided by the shadow policy" in report("--since", since)
    assert json.loads(report("--since", since, "--format", "json"))["disagreements"] == []


def test_a_bad_format_or_time_is_a_usage_error(recorded: dict[str, str]) -> None:
    assert runner.invoke(app, ["policy", "shadow", "report", "--format", "html"]).exit_code == 2
    assert runner.invoke(app, ["policy", "shadow", "report", "--since", "yesterday"]).exit_code == 2
