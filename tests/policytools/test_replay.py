"""`outbox policy replay` on recordings made here by real calls: agents calling http.request (a
loopback server) and email.send (a loopback Maildir sink) through the HTTP face, run by the real
pipeline, then re-decided by a candidate policy read from the database and from an export."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from outbox.cli.main import app
from outbox.config import get_settings
from outbox.mail.sending.sink import MaildirSink
from outbox.mail.service import pause
from outbox.recordings.reader import read_export
from outbox.runtime import Runtime
from tests.conftest import POLICIES
from tests.policytools.replay_support import (
    QUICKSTART_SUBDOMAIN,
    WINDOW_SUBDOMAIN,
    Traffic,
    export_text,
    mail_settings,
    mail_sink,
    quickstart_traffic,
    traffic_on,
)
from tests.support.http_target import TargetServer

runner = CliRunner()


@dataclass
class Recorded:
    runtime: Runtime
    traffic: Traffic
    ids: dict[str, str]
    sink: MaildirSink
    work: Path
    target: TargetServer

    def export(self) -> Path:
        path = self.work / "export.jsonl"
        path.write_text(export_text(self.runtime), encoding="utf-8")
        return path


@pytest.fixture
def recorded(make_runtime: Callable[..., Runtime], tmp_path: Path, target_server: TargetServer) -> Iterator[Recorded]:
    with mail_sink(tmp_path / "maildir") as sink:
        runtime = make_runtime(**mail_settings(tmp_path, sink))
        with traffic_on(runtime) as traffic:
            ids = quickstart_traffic(traffic, target_server.base_url)
            yield Recorded(runtime, traffic, ids, sink, tmp_path, target_server)


@pytest.fixture
def cli_database(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[None]:
    """The CLI reads the test's database (OUTBOX_DATABASE_URL)."""
    monkeypatch.setenv("OUTBOX_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def candidate(tmp_path: Path, *edits: tuple[str, str, str]) -> Path:
    """A copy of the shipped policies with (file, old, new) replacements."""
    directory = tmp_path / "candidate"
    shutil.copytree(POLICIES, directory)
    for name, old, new in edits:
        path = directory / name
        text = path.read_text(encoding="utf-8")
        assert old in text, (name, old)
        path.write_text(text.replace(old, new), encoding="utf-8")
    return directory


def edit_mail(directory: Path, domain: str, **changes: Any) -> None:
    path = directory / "mail.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    sub = next(s for s in config["subdomains"] if s["domain"] == domain)
    sub.update(changes)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def replay(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["policy", "replay", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def replay_json(*args: str) -> dict[str, Any]:
    code, out, err = replay(*args, "--format", "json")
    assert code == 0, err
    report: dict[str, Any] = json.loads(out)
    return report


def changed(report: dict[str, Any]) -> dict[str, list[str]]:
    return {c["action_id"]: c["changes"] for c in report["changes"]}


# A candidate that denies one recorded call (the reader's GET /orders/1) and allows another (its
# GET /admin/users, denied when recorded).
DENY_ONE_ALLOW_ANOTHER = (
    ("rules.csv", "p, role:http-reader, http:127.0.0.1:*/admin/**, get|head|post|put|patch|delete, deny\n", ""),
    (
        "rules.csv",
        "p, role:http-reader, http:127.0.0.1:*/**, get|head, allow\n",
        "p, role:http-reader, http:127.0.0.1:*/**, get|head, allow\n"
        "p, role:http-reader, http:127.0.0.1:*/orders/1, get, deny\n",
    ),
)


def _assert_deny_one_allow_another(report: dict[str, Any], ids: dict[str, str]) -> None:
    assert changed(report) == {ids["read"]: ["allow-to-deny"], ids["admin"]: ["deny-to-allow"]}
    assert report["replayed"] == len(ids) and report["unchanged"] == len(ids) - 2
    assert report["by_change"] == {"allow-to-deny": 1, "deny-to-allow": 1}
    assert report["by_tool"]["http.request"] == {"replayed": 5, "changed": 2}
    assert report["by_tool"]["email.send"] == {"replayed": 2, "changed": 0}
    assert report["by_agent"]["reader-bot"] == {"replayed": 2, "changed": 2}
    read = next(c for c in report["changes"] if c["action_id"] == ids["read"])
    assert read["agent"] == "reader-bot" and read["tool"] == "http.request"
    assert read["before"]["effect"] == "allow"
    assert read["before"]["rules"] == ["p, role:http-reader, http:127.0.0.1:*/**, get|head, allow"]
    assert read["after"]["effect"] == "deny"
    assert read["after"]["rules"] == ["p, role:http-reader, http:127.0.0.1:*/orders/1, get, deny"]


@pytest.mark.usefixtures("cli_database")
def test_a_candidate_that_denies_one_call_and_allows_another_shows_both_and_nothing_else(
    recorded: Recorded, tmp_path: Path
) -> None:
    directory = candidate(tmp_path, *DENY_ONE_ALLOW_ANOTHER)
    export = recorded.export()  # seals the events: the database is read as sealed
    from_database = replay_json("--policy", str(directory))
    from_export = replay_json("--policy", str(directory), "--from", str(export))
    _assert_deny_one_allow_another(from_database, recorded.ids)
    _assert_deny_one_allow_another(from_export, recorded.ids)
    assert from_database["selection"]["source"] == "the database"
    assert from_export["selection"] == {
        "source": str(export),
        "complete": True,
        "since": None,
        "until": None,
        "agent": None,
        "tool": None,
    }
    assert from_database["changes"] == from_export["changes"]


def test_the_shipped_policies_change_nothing_they_decided(recorded: Recorded) -> None:
    report = replay_json("--policy", str(POLICIES), "--from", str(recorded.export()))
    assert report["replayed"] == len(recorded.ids)
    assert report["changed"] == 0 and report["changes"] == [] and report["by_change"] == {}


def test_another_quorum_is_a_changed_gate(recorded: Recorded, tmp_path: Path) -> None:
    directory = candidate(tmp_path, ("approvals.yaml", "  quorum: 1\n", "  quorum: 2\n"))
    report = replay_json("--policy", str(directory), "--from", str(recorded.export()))
    # The delete under the default gate now needs two people; the /prod/ delete had its own gate.
    assert changed(report) == {recorded.ids["delete"]: ["gate-changed"]}
    change = report["changes"][0]
    assert (change["before"]["quorum"], change["after"]["quorum"]) == (1, 2)


def test_an_allowed_write_that_now_needs_a_human_is_allow_to_approve(recorded: Recorded, tmp_path: Path) -> None:
    directory = candidate(
        tmp_path,
        ("rules.csv", "http:127.0.0.1:*/**, post|put|patch, allow", "http:127.0.0.1:*/**, post|put|patch, approve"),
    )
    report = replay_json("--policy", str(directory), "--from", str(recorded.export()))
    assert changed(report) == {recorded.ids["write"]: ["allow-to-approve"]}
    assert report["changes"][0]["after"]["quorum"] == 1


def _closed_now() -> dict[str, Any]:
    """A send window on one weekday three days from now: closed whenever the mail was sent."""
    day = datetime.now(UTC) + timedelta(days=3)
    return {"days": [day.strftime("%a").lower()], "start": "08:00", "end": "18:00", "timezone": "UTC"}


def test_a_send_window_closed_when_the_mail_went_out_defers_it_now(recorded: Recorded, tmp_path: Path) -> None:
    directory = candidate(tmp_path)
    edit_mail(directory, QUICKSTART_SUBDOMAIN, send_window=_closed_now())
    report = replay_json("--policy", str(directory), "--from", str(recorded.export()))
    assert changed(report) == {recorded.ids["mail"]: ["now-deferred"]}
    after = report["changes"][0]["after"]
    assert after["effect"] == "allow"
    assert after["deferred"] == f"outside the send window of {QUICKSTART_SUBDOMAIN} (in UTC)"


def test_a_smaller_budget_defers_the_sends_over_it_in_recorded_order(recorded: Recorded, tmp_path: Path) -> None:
    second = recorded.traffic.mail("mailer-bot", QUICKSTART_SUBDOMAIN, "cy@example.org", "Second")
    third = recorded.traffic.mail("mailer-bot", QUICKSTART_SUBDOMAIN, "di@example.net", "Third")
    directory = candidate(tmp_path)
    edit_mail(directory, QUICKSTART_SUBDOMAIN, budgets={"per_hour": 1, "per_day": 1000})
    report = replay_json("--policy", str(directory), "--from", str(recorded.export()), "--tool", "email.send")
    assert changed(report) == {second: ["now-deferred"], third: ["now-deferred"]}
    assert "hourly cap of agents.mail.example.com (1 per hour) is used up" in report["changes"][0]["after"]["deferred"]


def test_a_tool_the_candidate_no_longer_defines_is_refused(recorded: Recorded, tmp_path: Path) -> None:
    directory = candidate(tmp_path)
    (directory / "mail.yaml").unlink()
    report = replay_json("--policy", str(directory), "--from", str(recorded.export()))
    assert changed(report) == {recorded.ids["mail"]: ["now-refused"], recorded.ids["reminder"]: ["now-refused"]}
    assert report["changes"][0]["after"]["effect"] == "refused"
    assert "unknown tool 'email.send'" in report["changes"][0]["after"]["refusal"]


def test_arguments_the_candidates_definition_no_longer_accepts_are_refused(recorded: Recorded, tmp_path: Path) -> None:
    directory = candidate(tmp_path)
    config = yaml.safe_load((directory / "mail.yaml").read_text(encoding="utf-8"))
    config["subdomains"] = [s for s in config["subdomains"] if s["domain"] != WINDOW_SUBDOMAIN]
    (directory / "mail.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    report = replay_json("--policy", str(directory), "--from", str(recorded.export()))
    assert changed(report) == {recorded.ids["reminder"]: ["now-refused"]}
    refusal = report["changes"][0]["after"]["refusal"]
    assert refusal.startswith("email.send refuses the arguments: ")
    assert f"{WINDOW_SUBDOMAIN} is not a configured agent sending subdomain" in refusal


def test_a_callback_the_candidate_no_longer_allows_is_refused(recorded: Recorded, tmp_path: Path) -> None:
    url = recorded.target.base_url
    hooked = recorded.traffic.call(
        "writer-bot", "http.request", {"method": "POST", "url": f"{url}/orders"}, callback_url=f"{url}/hooks/done"
    )
    directory = candidate(
        tmp_path, ("rules.csv", "p, role:http-writer, http:127.0.0.1:*/hooks/**, callback, allow\n", "")
    )
    report = replay_json("--policy", str(directory), "--from", str(recorded.export()))
    assert changed(report) == {hooked: ["now-refused"]}
    assert report["changes"][0]["after"]["refusal"].startswith("callback_url: no policy rule allows callbacks to")


def test_filters_select_by_time_agent_and_tool(recorded: Recorded, tmp_path: Path) -> None:
    middle = datetime.now(UTC)
    late_call = {"method": "GET", "url": f"{recorded.target.base_url}/late"}
    late = recorded.traffic.call("reader-bot", "http.request", late_call)
    export = str(recorded.export())
    directory = str(candidate(tmp_path, *DENY_ONE_ALLOW_ANOTHER))

    def replayed(*args: str) -> int:
        count: int = replay_json("--policy", directory, "--from", export, *args)["replayed"]
        return count

    since = middle.isoformat()
    assert replayed("--since", since) == 1
    assert replayed("--until", since) == len(recorded.ids)
    # A time without an offset is UTC.
    assert replayed("--since", middle.replace(tzinfo=None).isoformat()) == 1
    assert replayed("--agent", "reader-bot") == 3
    assert replayed("--agent", "reader-bot", "--until", since) == 2
    assert replayed("--tool", "email.send") == 2
    assert replayed("--agent", "nobody") == 0
    only_late = replay_json("--policy", directory, "--from", export, "--since", since)
    assert only_late["changes"] == [] and only_late["selection"]["since"] == middle.isoformat()
    assert late not in changed(replay_json("--policy", directory, "--from", export))


def test_a_deferral_outside_policy_is_no_recorded_outcome(recorded: Recorded, tmp_path: Path) -> None:
    pause(recorded.runtime, subdomain=QUICKSTART_SUBDOMAIN, reason="bounce storm", actor="user:ops@example.com")
    paused = recorded.traffic.mail("mailer-bot", QUICKSTART_SUBDOMAIN, "cy@example.org", "While paused")
    export = recorded.export()
    held = next(a for a in read_export(export).actions if a.id == paused)
    assert held.status == "deferred" and "paused" in held.deferrals[0]
    assert replay_json("--policy", str(POLICIES), "--from", str(export))["changed"] == 0
    # Only the effect changes: the pause was never policy's, so it does not read as no longer deferred.
    rule = "p, role:mailer, mail:agents.mail.example.com/*@example.org, send, "
    directory = candidate(tmp_path, ("rules.csv", rule + "allow", rule + "approve"))
    report = replay_json("--policy", str(directory), "--from", str(export))
    assert changed(report) == {paused: ["allow-to-approve"]}
    assert report["changes"][0]["before"]["deferred"] is None


def test_mail_a_send_window_held_back_that_the_candidate_lets_go_is_no_longer_deferred(
    policy_dir: Path, make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    edit_mail(policy_dir, QUICKSTART_SUBDOMAIN, send_window=_closed_now())
    with mail_sink(tmp_path / "maildir") as sink:
        # The window opens in three days: the message may wait that long (default 72 h).
        runtime = make_runtime(**mail_settings(tmp_path, sink), mail_max_deferral_hours=24 * 7)
        with traffic_on(runtime) as traffic:
            held = traffic.mail("mailer-bot", QUICKSTART_SUBDOMAIN, "ann@example.net", "Held for the window")
        export = tmp_path / "export.jsonl"
        export.write_text(export_text(runtime), encoding="utf-8")
        assert len(sink.maildir) == 0
    report = replay_json("--policy", str(POLICIES), "--from", str(export))
    assert changed(report) == {held: ["no-longer-deferred"]}
    assert report["changes"][0]["before"]["deferred"] == f"outside the send window of {QUICKSTART_SUBDOMAIN} (in UTC)"
    assert replay("--policy", str(POLICIES), "--from", str(export), "--fail-on", "loosening")[0] == 1
    assert replay("--policy", str(policy_dir), "--from", str(export), "--fail-on", "any")[0] == 0


def test_mail_that_expired_waiting_for_its_window_was_held_back_too(
    policy_dir: Path, make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    edit_mail(policy_dir, QUICKSTART_SUBDOMAIN, send_window=_closed_now())
    with mail_sink(tmp_path / "maildir") as sink:
        # The window opens in three days, after the message's expiry: it fails instead of waiting.
        runtime = make_runtime(**mail_settings(tmp_path, sink), mail_max_deferral_hours=24)
        with traffic_on(runtime) as traffic:
            expired = traffic.mail("mailer-bot", QUICKSTART_SUBDOMAIN, "ann@example.net", "Too late")
        export = tmp_path / "export.jsonl"
        export.write_text(export_text(runtime), encoding="utf-8")
    assert next(a for a in read_export(export).actions if a.id == expired).status == "failed"
    assert replay_json("--policy", str(policy_dir), "--from", str(export))["changed"] == 0
    report = replay_json("--policy", str(POLICIES), "--from", str(export))
    assert changed(report) == {expired: ["no-longer-deferred"]}
    assert report["changes"][0]["before"]["deferred"] == f"outside the send window of {QUICKSTART_SUBDOMAIN} (in UTC)"
