"""The shadow policy on live traffic: every submission decided again by OUTBOX_SHADOW_POLICY_DIR,
recorded on the action and in its audit event, counted in metrics, shown to admins only, never
enforced; reloaded like the policy (docs/shadow-policy.md). A real server (uvicorn) on a real
runtime, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import event
from sqlmodel import select

from outbox.audit.models import AuditEvent
from outbox.config import Settings
from outbox.runtime import Runtime, ShadowPolicyInvalid
from tests.conftest import POLICIES
from tests.policytools.test_status import RunningServer
from tests.support.agents import bearer, make_agent
from tests.support.calls import submit_call
from tests.support.dispatchers import RecordingDispatcher
from tests.support.processes import free_port
from tests.test_serve import _refused, _serve

ADMIN_TOKEN = "admin-token-for-shadow-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# The shadow denies reads under /reports/, which the live policy allows …
SHADOW_DENY = "p, role:http-reader, http:127.0.0.1:*/reports/**, get, deny"
# … and wants three approvers, not two, for deletes under /prod/.
LIVE_GATE, SHADOW_GATE = "quorum: 2\n    expires_in: 30m", "quorum: 3\n    expires_in: 30m"


@dataclass
class ShadowServer:
    runtime: Runtime
    url: str
    shadow_dir: Path
    reader: str
    writer: str

    def submit(self, key: str, method: str, path: str, idem: str) -> dict[str, Any]:
        body = {"tool": "http.request", "args": {"method": method, "url": f"http://127.0.0.1:9{path}"}}
        response = httpx.post(
            f"{self.url}/v1/actions", json=body, headers={**bearer(key), "Idempotency-Key": idem}, timeout=10
        )
        assert response.status_code in (202, 403), response.text
        answer: dict[str, Any] = response.json()
        return answer

    def admin_read(self, action_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/v1/admin/actions/{action_id}", headers=ADMIN, timeout=10)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0


def shadow_of(live: Path, target: Path) -> Path:
    shutil.copytree(live, target)
    with (target / "rules.csv").open("a", encoding="utf-8") as rules:
        rules.write(f"\n{SHADOW_DENY}\n")
    approvals = target / "approvals.yaml"
    text = approvals.read_text(encoding="utf-8")
    assert LIVE_GATE in text
    approvals.write_text(text.replace(LIVE_GATE, SHADOW_GATE), encoding="utf-8")
    return target


@pytest.fixture
def shadow_server(policy_dir: Path, tmp_path: Path, make_runtime: Callable[..., Runtime]) -> Iterator[ShadowServer]:
    shadow_dir = shadow_of(policy_dir, tmp_path / "shadow")
    runtime = make_runtime(RecordingDispatcher(), shadow_policy_dir=shadow_dir, admin_token=SecretStr(ADMIN_TOKEN))
    reader = make_agent(runtime.db, "reader-bot", ["http-reader"])
    writer = make_agent(runtime.db, "writer-bot", ["http-writer"])
    with RunningServer(runtime) as url:
        yield ShadowServer(runtime, url, shadow_dir, reader, writer)


def received_event(runtime: Runtime, action_id: str) -> dict[str, Any]:
    with runtime.db.session() as session:
        event = session.exec(
            select(AuditEvent).where(AuditEvent.action_id == action_id, AuditEvent.event_type == "action.received")
        ).one()
    data: dict[str, Any] = json.loads(event.data_json)
    return data


def test_a_disagreement_is_recorded_on_the_action_and_its_event_never_enforced_and_counted(
    shadow_server: ShadowServer,
) -> None:
    server = shadow_server
    labels = {"tool": "http.request", "change": "allow-to-deny"}
    before = server.metric("outbox_shadow_disagreements_total", **labels)
    decided_before = server.metric("outbox_shadow_decisions_total", tool="http.request")

    answer = server.submit(server.reader, "GET", "/reports/q3", "r1")

    assert answer["status"] == "queued"  # the live policy decides; the shadow's deny is not enforced
    shadow = server.admin_read(answer["id"])["shadow"]
    assert shadow["changes"] == ["allow-to-deny"]
    assert shadow["outcome"]["effect"] == "deny"
    assert shadow["outcome"]["rules"] == [SHADOW_DENY]
    assert shadow["live"]["effect"] == "allow"
    assert shadow["policy_version"] == server.runtime.shadow_policy.current.version  # type: ignore[union-attr]
    assert shadow["policy_version"] != server.runtime.policy.current.version
    assert shadow["refused"] is None
    assert received_event(server.runtime, answer["id"])["shadow"] == shadow
    assert server.metric("outbox_shadow_disagreements_total", **labels) == before + 1
    assert server.metric("outbox_shadow_decisions_total", tool="http.request") == decided_before + 1


def test_agents_never_see_the_shadow_not_even_on_their_own_action(shadow_server: ShadowServer) -> None:
    server = shadow_server
    answer = server.submit(server.reader, "GET", "/reports/q4", "r1")
    assert "shadow" not in answer

    own = httpx.get(f"{server.url}/v1/actions/{answer['id']}", headers=bearer(server.reader), timeout=10)
    assert own.status_code == 200
    assert "shadow" not in own.json()
    listed = httpx.get(f"{server.url}/v1/actions", headers=bearer(server.reader), timeout=10).json()
    assert all("shadow" not in item for item in listed["items"])
    replayed = server.submit(server.reader, "GET", "/reports/q4", "r1")
    assert replayed["id"] == answer["id"]
    assert "shadow" not in replayed
    for credential in (bearer(server.reader), {"Authorization": "Bearer wrong"}, {}):
        refused = httpx.get(f"{server.url}/v1/admin/actions/{answer['id']}", headers=credential, timeout=10)
        assert refused.status_code == 401


def test_an_agreeing_call_records_the_shadow_outcome_with_no_changes(shadow_server: ShadowServer) -> None:
    server = shadow_server
    answer = server.submit(server.reader, "GET", "/orders/7", "a1")

    shadow = server.admin_read(answer["id"])["shadow"]
    assert shadow["changes"] == []
    assert shadow["outcome"]["effect"] == "allow"
    assert shadow["outcome"]["rules"] == ["p, role:http-reader, http:127.0.0.1:*/**, get|head, allow"]
    assert received_event(server.runtime, answer["id"])["shadow"]["changes"] == []


def test_a_denied_call_the_shadow_also_denies_agrees(shadow_server: ShadowServer) -> None:
    server = shadow_server
    answer = server.submit(server.reader, "GET", "/admin/users", "d1")

    assert answer["status"] == 403
    shadow = server.admin_read(answer["action_id"])["shadow"]
    assert (shadow["outcome"]["effect"], shadow["changes"]) == ("deny", [])


def test_the_shadow_gate_is_compared_for_calls_sent_to_a_human(shadow_server: ShadowServer) -> None:
    server = shadow_server
    answer = server.submit(server.writer, "DELETE", "/prod/orders/7", "g1")

    assert answer["status"] == "awaiting_approval"
    shadow = server.admin_read(answer["id"])["shadow"]
    assert shadow["changes"] == ["gate-changed"]
    assert (shadow["live"]["quorum"], shadow["outcome"]["quorum"]) == (2, 3)
    assert server.metric("outbox_shadow_disagreements_total", tool="http.request", change="gate-changed") >= 1


def test_a_shadow_reload_changes_later_decisions_and_keeps_earlier_records(shadow_server: ShadowServer) -> None:
    server = shadow_server
    first = server.submit(server.reader, "GET", "/reports/a", "s1")
    rules = server.shadow_dir / "rules.csv"
    rules.write_text(rules.read_text(encoding="utf-8").replace(SHADOW_DENY, ""), encoding="utf-8")

    reloaded = httpx.post(f"{server.url}/v1/admin/policy/shadow/reload", headers=ADMIN, timeout=10)
    assert reloaded.status_code == 200, reloaded.text
    second = server.submit(server.reader, "GET", "/reports/b", "s2")

    assert server.admin_read(first["id"])["shadow"]["changes"] == ["allow-to-deny"]
    later = server.admin_read(second["id"])["shadow"]
    assert later["changes"] == []
    assert later["policy_version"] == reloaded.json()["version"]
    assert later["policy_version"] != server.admin_read(first["id"])["shadow"]["policy_version"]
    info = server.metric("outbox_shadow_policy_info", version=later["policy_version"], git_commit="")
    assert info == 1


def test_a_shadow_that_fails_to_reload_keeps_the_previous_one(shadow_server: ShadowServer) -> None:
    server = shadow_server
    running = server.runtime.shadow_policy.current.version  # type: ignore[union-attr]
    with (server.shadow_dir / "rules.csv").open("a", encoding="utf-8") as rules:
        rules.write("p, role:http-reader, broken\n")

    refused = httpx.post(f"{server.url}/v1/admin/policy/shadow/reload", headers=ADMIN, timeout=10)
    answer = server.submit(server.reader, "GET", "/reports/c", "f1")

    assert refused.status_code == 422
    assert refused.json()["running_version"] == running
    shadow = server.admin_read(answer["id"])["shadow"]
    assert (shadow["policy_version"], shadow["changes"]) == (running, ["allow-to-deny"])
    assert server.metric("outbox_shadow_policy_reload_failing") == 1
    # The live policy was not touched by the shadow's failure.
    assert server.metric("outbox_policy_reload_failing") == 0


def test_sighup_and_the_file_watch_reload_the_shadow_too(shadow_server: ShadowServer) -> None:
    server = shadow_server
    rules = server.shadow_dir / "rules.csv"
    rules.write_text(rules.read_text(encoding="utf-8").replace(SHADOW_DENY, ""), encoding="utf-8")
    before = server.runtime.shadow_policy.current.version  # type: ignore[union-attr]

    server.runtime.reload_policies()  # what SIGHUP runs

    assert server.runtime.shadow_policy.current.version != before  # type: ignore[union-attr]
    assert server.runtime.policy_stores == (server.runtime.policy, server.runtime.shadow_policy)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_without_a_shadow_policy_nothing_is_recorded_and_reload_is_404(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime(RecordingDispatcher(), admin_token=SecretStr(ADMIN_TOKEN))
    reader = make_agent(runtime.db, "reader-bot", ["http-reader"])
    with RunningServer(runtime) as url:
        server = ShadowServer(runtime, url, Path(), reader, reader)
        answer = server.submit(reader, "GET", "/reports/q3", "n1")
        assert server.admin_read(answer["id"])["shadow"] is None
        assert "shadow" not in received_event(runtime, answer["id"])
        assert httpx.post(f"{url}/v1/admin/policy/shadow/reload", headers=ADMIN, timeout=10).status_code == 404
        assert httpx.get(f"{url}/v1/admin/actions/act_missing", headers=ADMIN, timeout=10).status_code == 404


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("broken", ["missing", "bad-rule", "bad-approvals"])
def test_a_shadow_that_does_not_load_at_start_refuses_with_one_line(
    broken: str, policy_dir: Path, tmp_path: Path, make_runtime: Callable[..., Runtime]
) -> None:
    shadow_dir = tmp_path / "shadow"
    if broken != "missing":
        shutil.copytree(policy_dir, shadow_dir)
    if broken == "bad-rule":
        (shadow_dir / "rules.csv").write_text("p, role:x, only-three\n", encoding="utf-8")
    if broken == "bad-approvals":
        (shadow_dir / "approvals.yaml").write_text("defaults: [not, a, mapping]\n", encoding="utf-8")

    with pytest.raises(ShadowPolicyInvalid) as refused:
        make_runtime(RecordingDispatcher(), shadow_policy_dir=shadow_dir)

    assert str(refused.value).startswith(f"the shadow policy {shadow_dir} did not load: ")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_workers_and_cli_commands_do_not_load_the_shadow_they_never_use(tmp_path: Path, settings: Settings) -> None:
    missing = settings.model_copy(update={"shadow_policy_dir": tmp_path / "no-such-shadow"})

    worker = Runtime.build(missing, RecordingDispatcher(), decides_submissions=False)
    try:
        assert worker.shadow_policy is None
    finally:
        worker.db.dispose()
    with pytest.raises(ShadowPolicyInvalid):
        Runtime.build(missing, RecordingDispatcher())


@pytest.mark.parametrize("change", ["tool-removed", "argument-narrowed"])
def test_a_call_the_shadow_would_refuse_as_invalid_is_recorded_as_now_refused(
    change: str, shadow_server: ShadowServer
) -> None:
    server = shadow_server
    definitions = server.shadow_dir / "tools" / "k8s.yaml"
    if change == "tool-removed":
        definitions.unlink()
    else:
        text = definitions.read_text(encoding="utf-8")
        definitions.write_text(text.replace("enum: [staging, production]", "enum: [staging]", 1), encoding="utf-8")
    assert server.runtime.shadow_policy.reload()[0]  # type: ignore[union-attr]
    body = {"tool": "k8s.get_pods", "args": {"cluster": "production", "namespace": "shop"}}

    response = httpx.post(
        f"{server.url}/v1/actions", json=body, headers={**bearer(server.reader), "Idempotency-Key": "k1"}, timeout=10
    )

    assert response.status_code == 403  # the live policy decided it: no rule lets this agent read k8s
    shadow = server.admin_read(response.json()["action_id"])["shadow"]
    assert (shadow["outcome"]["effect"], shadow["changes"]) == ("refused", ["now-refused"])
    expected = "unknown tool" if change == "tool-removed" else "refuses the arguments: "
    assert expected in shadow["refused"]


def submission_statements(runtime: Runtime, key: str, idem: str) -> list[str]:
    """The SQL statements one fresh submission sends."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        seen.append(statement)

    event.listen(runtime.db.engine, "before_cursor_execute", record)
    try:
        submit_call(runtime, key, "http.request", {"method": "GET", "url": "http://127.0.0.1:9/reports/x"}, idem)
    finally:
        event.remove(runtime.db.engine, "before_cursor_execute", record)
    return seen


def test_the_shadow_adds_no_statement_to_a_submission(
    policy_dir: Path, tmp_path: Path, make_runtime: Callable[..., Runtime]
) -> None:
    plain = make_runtime(RecordingDispatcher())
    shadowed = make_runtime(RecordingDispatcher(), shadow_policy_dir=shadow_of(policy_dir, tmp_path / "shadow"))
    key = make_agent(plain.db, "reader-bot", ["http-reader"])
    submission_statements(plain, key, "warm-1")  # caches warmed on both sides
    submission_statements(shadowed, key, "warm-2")

    without = submission_statements(plain, key, "count-1")
    with_shadow = submission_statements(shadowed, key, "count-2")

    assert with_shadow == without


@pytest.mark.parametrize("broken", ["missing", "bad-rule"])
def test_outbox_serve_refuses_a_broken_shadow_in_one_line_before_creating_anything(broken: str, tmp_path: Path) -> None:
    shutil.copytree(POLICIES, tmp_path / "policies")
    shadow_dir = tmp_path / "shadow"
    if broken == "bad-rule":
        shutil.copytree(POLICIES, shadow_dir)
        (shadow_dir / "rules.csv").write_text("p, role:x, only-three\n", encoding="utf-8")

    result = _serve(tmp_path, "--port", str(free_port()), OUTBOX_SHADOW_POLICY_DIR=str(shadow_dir))

    line = _refused(result, tmp_path)
    assert line.startswith(f"error: the shadow policy {shadow_dir} did not load: ")
