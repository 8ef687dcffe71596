"""The person acted for can never approve, however they are written (issue 10).

End to end through the real service on SQLite and PostgreSQL: `on_behalf_of` is either refused at
submission (422, nothing recorded) or recorded as the canonical person, who is then refused
(`self_approval`) under every spelling and every identity linked to them, through the service,
the CLI, the admin API and Slack; a different approver still approves. Values stored before
identities were parsed still name the person in them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import col, select

from outbox.actions.models import Action
from outbox.approvals.authority import ApprovalRefused, RefusalCode
from outbox.approvals.digest import approval_digest
from outbox.approvals.models import ApprovalDecision, ApprovalRequest
from outbox.approvals.service import decide
from outbox.audit.models import AuditEvent
from outbox.config import get_settings
from outbox.execution.service import run_action
from outbox.runtime import Runtime
from tests.approvals.support import ADMIN_TOKEN, action_of, approval_of, client_for, deployer, submit_call
from tests.approvals.test_cli import outbox, use_runtime
from tests.slack.fake_slack import FakeSlack
from tests.slack.payloads import block_action, form_body, signed_headers
from tests.support.agents import bearer
from tests.support.http_target import TargetServer

LEAD = "user:lead@example.com"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# Spellings of lead@example.com that are refused at submission: each could hide the person.
REFUSED_SPELLINGS = [
    "Lead <lead@example.com>",
    '"Lead" <lead@example.com>',
    "<lead@example.com>",
    "Lead ＜lead@example.com＞",
    "mailto:lead@example.com",
    "MAILTO:Lead@Example.com",
    "ｍａｉｌｔｏ:lead@example.com",
    "user:mailto:lead@example.com",
    "lead@example.com\u200b",
    "\u200blead@example.com",
    "le\u200dad@example.com",
    "lead@exam\u00adple.com",
    "lead@example.com\ufeff",
    "\u202elead@example.com",
    "\u2066lead@example.com\u2069",
    "user:lead@example.com\u2060",
    "lead@example.com\n",
    "lead @example.com",
    "lead",
    "agent:deployer",
]
# Spellings accepted as exactly the person user:lead@example.com.
ACCEPTED_SPELLINGS = [
    "lead@example.com",
    "LEAD@EXAMPLE.COM",
    "Lead@Example.com",
    "user:lead@example.com",
    "USER:Lead@Example.COM",
    "ｌｅａｄ@example.com",
    "lead＠ＥＸＡＭＰＬＥ.com",
    " lead@example.com ",
]
# Every way lead may try to approve: spellings of the address, and slack:U0LEAD1, which a `g`
# rule of the test policy links to user:lead@example.com (tests/approvals/support.py).
LEAD_AS_APPROVER = [
    "user:lead@example.com",
    "lead@example.com",
    "LEAD@example.com",
    "user:Lead@Example.COM",
    "ｌｅａｄ@example.com",
    "slack:U0LEAD1",
    "slack:u0lead1",
]
# Values an older version stored verbatim, before identities were parsed.
LEGACY_VALUES = [
    "Lead <lead@example.com>",
    "mailto:lead@example.com",
    "lead@example.com\u200b",
    "\u202elead@example.com",
    "LEAD@example.com",
    "lead@example.com",
    "Ops <ops@example.org>, Lead <lead@example.com>",
]


def post_action(client: TestClient, key: str, url: str, on_behalf_of: str, idempotency_key: str | None = None) -> Any:
    body = {"tool": "http.request", "args": {"method": "DELETE", "url": url}, "on_behalf_of": on_behalf_of}
    headers = {**bearer(key), "Idempotency-Key": idempotency_key or str(uuid.uuid4())}
    return client.post("/v1/actions", json=body, headers=headers)


def refusal_code(runtime: Runtime, action_id: str, identity: str) -> RefusalCode:
    with pytest.raises(ApprovalRefused) as caught:
        decide(runtime, action_id, identity, "approve", via="cli")
    return caught.value.code


def received_events(runtime: Runtime) -> list[AuditEvent]:
    with runtime.db.session() as session:
        return list(session.exec(select(AuditEvent).where(col(AuditEvent.event_type) == "action.received")).all())


def store_legacy_value(runtime: Runtime, action_id: str, on_behalf_of: str) -> None:
    """What an older version left in the row: the text as the agent sent it."""
    with runtime.db.session() as session:
        session.execute(update(Action).where(col(Action.id) == action_id).values(on_behalf_of=on_behalf_of))


# --- at submission ---------------------------------------------------------------------------


def test_a_spelling_that_could_hide_the_person_is_refused_at_submission_and_nothing_is_recorded(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    key = deployer(gate_runtime)
    with client_for(gate_runtime) as client:
        for spelling in REFUSED_SPELLINGS:
            answer = post_action(client, key, f"{target_server.base_url}/x", spelling)

            assert answer.status_code == 422, (spelling, answer.text)
            assert answer.headers["content-type"].startswith("application/problem+json")
            problem = answer.json()
            assert [e["field"] for e in problem["errors"]] == ["on_behalf_of"], spelling
            assert "bare e-mail address like ada@example.com" in problem["hint"]
            assert "user:" in problem["hint"] and "slack:" in problem["hint"]

        # A display name is refused with the bare address to send instead.
        named = post_action(client, key, f"{target_server.base_url}/x", "Lead <lead@example.com>").json()
        assert "send the bare address only, like lead@example.com" in named["errors"][0]["message"]

    assert received_events(gate_runtime) == []
    with gate_runtime.db.session() as session:
        assert session.exec(select(Action)).all() == []


def test_the_key_of_a_refused_submission_is_free_for_the_corrected_one(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    key = deployer(gate_runtime)
    idempotency_key = str(uuid.uuid4())
    with client_for(gate_runtime) as client:
        refused = post_action(client, key, f"{target_server.base_url}/x", "mailto:lead@example.com", idempotency_key)
        corrected = post_action(client, key, f"{target_server.base_url}/x", "lead@example.com", idempotency_key)

    assert refused.status_code == 422
    assert corrected.status_code == 202
    assert corrected.json()["on_behalf_of"] == LEAD


def test_every_accepted_spelling_records_the_canonical_person_everywhere(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    key = deployer(gate_runtime)
    with client_for(gate_runtime) as client:
        for spelling in ACCEPTED_SPELLINGS:
            answer = post_action(client, key, f"{target_server.base_url}/x", spelling)
            assert answer.status_code == 202, (spelling, answer.text)
            action_id = answer.json()["id"]

            assert answer.json()["on_behalf_of"] == LEAD
            action = action_of(gate_runtime, action_id)
            assert action.on_behalf_of == LEAD
            approval = approval_of(gate_runtime, action_id)
            assert approval.on_behalf_of == LEAD
            # The digest an approver decides on binds the canonical person.
            assert approval.digest == approval_digest(
                agent="agent:deployer",
                on_behalf_of=LEAD,
                tool="http.request",
                args=action.args,
                targets=approval.targets,
                preview=action.preview,
                policy_version=approval.policy_version,
            )
    assert [json.loads(event.data_json)["on_behalf_of"] for event in received_events(gate_runtime)] == [LEAD] * len(
        ACCEPTED_SPELLINGS
    )


def test_spellings_of_one_person_share_an_idempotency_fingerprint(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    key = deployer(gate_runtime)
    idempotency_key = str(uuid.uuid4())
    url = f"{target_server.base_url}/x"
    with client_for(gate_runtime) as client:
        first = post_action(client, key, url, "Lead@Example.com", idempotency_key)
        again = post_action(client, key, url, "user:lead@example.com", idempotency_key)
        someone_else = post_action(client, key, url, "ops@example.org", idempotency_key)

    assert first.status_code == 202
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert someone_else.status_code == 422  # the same key for another person is another request


# --- deciding --------------------------------------------------------------------------------


def test_the_person_acted_for_is_refused_under_every_spelling_and_linked_identity(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    key = deployer(gate_runtime)
    with client_for(gate_runtime) as client:
        action_ids = [
            post_action(client, key, f"{target_server.base_url}/x", spelling).json()["id"]
            for spelling in ACCEPTED_SPELLINGS
        ]

    for action_id in action_ids:
        for identity in LEAD_AS_APPROVER:
            assert refusal_code(gate_runtime, action_id, identity) is RefusalCode.SELF_APPROVAL, identity
        assert approval_of(gate_runtime, action_id).decisions == []
        # Another person approves, under a spelling of their own, and that counts.
        result = decide(gate_runtime, action_id, "OnCall@Example.com", "approve", via="cli")
        assert result.outcome == "approved"
        assert [d.approver for d in approval_of(gate_runtime, action_id).decisions] == ["user:oncall@example.com"]


def test_approver_identities_that_could_hide_a_person_are_refused(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    action_id = submit_call(
        gate_runtime,
        deployer(gate_runtime),
        method="DELETE",
        url=f"{target_server.base_url}/x",
        on_behalf_of="bob@example.com",
    )

    for identity in [
        "Lead <lead@example.com>",
        "mailto:lead@example.com",
        "user:lead@example.com\u200b",
        "lead",
        "agent:deployer",
    ]:
        assert refusal_code(gate_runtime, action_id, identity) is RefusalCode.INVALID_IDENTITY, identity

    assert approval_of(gate_runtime, action_id).decisions == []
    assert decide(gate_runtime, action_id, "LEAD@example.com", "approve", via="cli").outcome == "approved"
    assert approval_of(gate_runtime, action_id).decided_by == LEAD


def test_a_person_acted_for_by_their_slack_identity_cannot_approve_by_their_address(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    # `g, slack:U0123ABC, user:oncall@example.com` links the two: either one names the person.
    key = deployer(gate_runtime)
    url = f"{target_server.base_url}/x"
    for acted_for in ["slack:U0123ABC", "slack:u0123abc", "SLACK:U0123ABC"]:
        action_id = submit_call(gate_runtime, key, method="DELETE", url=url, on_behalf_of=acted_for)
        assert action_of(gate_runtime, action_id).on_behalf_of == "slack:U0123ABC"

        for identity in ["user:oncall@example.com", "OnCall@Example.com", "slack:U0123ABC"]:
            assert refusal_code(gate_runtime, action_id, identity) is RefusalCode.SELF_APPROVAL, identity
        assert decide(gate_runtime, action_id, LEAD, "approve", via="cli").outcome == "approved"


def test_mixed_case_identities_in_the_policy_mean_the_same_person(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    with (gate_runtime.policy.current.snapshot.directory / "rules.csv").open("a", encoding="utf-8") as rules:
        rules.write("g, slack:u0mixed, USER:Lead@Example.COM\ng, User:Reviewer@EXAMPLE.com, role:approver-http\n")
    assert gate_runtime.policy.reload()[0]
    action_id = submit_call(
        gate_runtime,
        deployer(gate_runtime),
        method="DELETE",
        url=f"{target_server.base_url}/x",
        on_behalf_of="lead@example.com",
    )

    assert refusal_code(gate_runtime, action_id, "slack:U0MIXED") is RefusalCode.SELF_APPROVAL
    assert decide(gate_runtime, action_id, "reviewer@example.com", "approve", via="cli").outcome == "approved"


def test_two_spellings_of_one_approver_count_once_toward_a_quorum(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    action_id = submit_call(
        gate_runtime, deployer(gate_runtime), method="DELETE", url=f"{target_server.base_url}/prod/x"
    )  # quorum 2

    assert decide(gate_runtime, action_id, "user:sre@example.com", "approve", via="cli").outcome == "recorded"
    assert decide(gate_runtime, action_id, "SRE@Example.COM", "approve", via="cli").outcome == "duplicate"
    assert decide(gate_runtime, action_id, "ｓｒｅ@example.com", "approve", via="cli").outcome == "duplicate"
    assert approval_of(gate_runtime, action_id).approvals == 1
    assert decide(gate_runtime, action_id, "oncall@example.com", "approve", via="cli").outcome == "approved"


# --- values stored before identities were parsed ---------------------------------------------


def test_an_old_stored_spelling_still_keeps_the_person_in_it_from_approving(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    key = deployer(gate_runtime)
    for legacy in LEGACY_VALUES:
        action_id = submit_call(gate_runtime, key, method="DELETE", url=f"{target_server.base_url}/x")
        store_legacy_value(gate_runtime, action_id, legacy)

        for identity in ["user:lead@example.com", "Lead@Example.com", "slack:U0LEAD1"]:
            assert refusal_code(gate_runtime, action_id, identity) is RefusalCode.SELF_APPROVAL, (legacy, identity)
        assert decide(gate_runtime, action_id, "oncall@example.com", "approve", via="cli").outcome == "approved"


def test_an_approval_by_the_person_in_an_old_stored_spelling_does_not_run(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    # Before the fix, lead approved a call stored as made for "Lead <lead@example.com>".
    action_id = submit_call(gate_runtime, deployer(gate_runtime), method="DELETE", url=f"{target_server.base_url}/x")
    assert decide(gate_runtime, action_id, LEAD, "approve", via="cli").outcome == "approved"
    legacy = "Lead <lead@example.com>"
    store_legacy_value(gate_runtime, action_id, legacy)
    action = action_of(gate_runtime, action_id)
    approval = approval_of(gate_runtime, action_id)
    digest = approval_digest(
        agent="agent:deployer",
        on_behalf_of=legacy,
        tool=action.tool,
        args=action.args,
        targets=approval.targets,
        preview=action.preview,
        policy_version=approval.policy_version,
    )
    with gate_runtime.db.session() as session:  # as the old version would have bound it
        session.execute(update(ApprovalRequest).where(col(ApprovalRequest.id) == approval.id).values(digest=digest))
        session.execute(
            update(ApprovalDecision).where(col(ApprovalDecision.approval_id) == approval.id).values(digest=digest)
        )

    assert run_action(gate_runtime, action_id) == "failed"

    assert target_server.received() == []
    reason = action_of(gate_runtime, action_id).status_reason or ""
    assert f"no longer lets {LEAD} approve" in reason


# --- the other ways in: CLI, admin API, Slack ------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.setenv("OUTBOX_LOG_JSON", "false")
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_the_cli_refuses_the_person_acted_for_under_every_spelling(
    gate_runtime: Runtime, cli_env: pytest.MonkeyPatch, target_server: TargetServer
) -> None:
    use_runtime(cli_env, gate_runtime)
    action_id = submit_call(
        gate_runtime,
        deployer(gate_runtime),
        method="DELETE",
        url=f"{target_server.base_url}/x",
        on_behalf_of="Lead@Example.com",
    )

    for identity in ["lead@example.com", "LEAD@example.com", "user:Lead@Example.com", "slack:u0lead1"]:
        result = outbox("approvals", "approve", action_id, "--as", identity)
        assert result.exit_code == 1 and "self_approval" in result.stderr, identity
    hidden = outbox("approvals", "approve", action_id, "--as", "Lead <lead@example.com>")
    assert hidden.exit_code == 1 and "invalid_identity" in hidden.stderr
    assert "send the bare address only, like lead@example.com" in hidden.stderr
    assert approval_of(gate_runtime, action_id).decisions == []

    approved = outbox("approvals", "approve", action_id, "--as", "OnCall@Example.com")

    assert approved.exit_code == 0, approved.output
    assert approval_of(gate_runtime, action_id).decided_by == "user:oncall@example.com"


def test_the_admin_api_refuses_the_person_acted_for_under_every_spelling(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    key = deployer(gate_runtime)
    with client_for(gate_runtime) as client:
        action_id = post_action(client, key, f"{target_server.base_url}/x", "lead@example.com").json()["id"]
        approve = f"/v1/admin/approvals/{action_id}/approve"

        for identity in ["LEAD@EXAMPLE.COM", "user:lead@example.com", "slack:U0LEAD1"]:
            answer = client.post(approve, json={"as": identity}, headers=ADMIN)
            assert answer.status_code == 403, (identity, answer.text)
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert answer.json()["code"] == "self_approval"
        for identity in ["Lead <lead@example.com>", "mailto:lead@example.com", "user:lead@example.com\u200b"]:
            answer = client.post(approve, json={"as": identity}, headers=ADMIN)
            assert answer.status_code == 422, (identity, answer.text)
            assert answer.json()["code"] == "invalid_identity"
            assert "bare e-mail address" in answer.json()["hint"]
        assert approval_of(gate_runtime, action_id).decisions == []

        approved = client.post(approve, json={"as": "OnCall@Example.com"}, headers=ADMIN)

    assert approved.status_code == 200, approved.text
    assert approved.json()["approval"]["decided_by"] == "user:oncall@example.com"


def test_slack_refuses_the_person_acted_for_however_the_agent_wrote_them(
    slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer
) -> None:
    key = deployer(slack_runtime)
    url = f"{target_server.base_url}/x"
    action_ids = [
        submit_call(slack_runtime, key, method="DELETE", url=url, on_behalf_of=spelling)
        for spelling in ["LEAD@example.com", "user:Lead@Example.com"]
    ]

    with client_for(slack_runtime) as client:
        for number, action_id in enumerate(action_ids):
            approval = approval_of(slack_runtime, action_id)
            payload = block_action(
                user_id="U0LEAD1",
                action_id="outbox_approve",
                value=f"{approval.id}:{approval.digest}",
                action_ts=f"1700000100.00000{number}",
            )
            body = form_body(payload)
            assert client.post("/slack/interactions", content=body, headers=signed_headers(body)).status_code == 200

    replies = [call.body["text"] for call in fake_slack.calls_to("chat.postEphemeral")]
    assert len(replies) == 2
    assert all("slack:U0LEAD1 is the person this call is made for (user:lead@example.com)" in r for r in replies)
    assert all(action_of(slack_runtime, a).status == "awaiting_approval" for a in action_ids)
