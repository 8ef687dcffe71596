"""Approval gates: who may approve, quorum, deny, expiry, and the check right before execution."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from outbox.actions.models import Action
from outbox.actions.service import cancel_action
from outbox.agents.service import authenticate
from outbox.approvals.authority import ApprovalRefused, RefusalCode
from outbox.approvals.digest import approval_digest
from outbox.approvals.service import decide
from outbox.audit.models import AuditEvent
from outbox.execution.service import run_action
from outbox.execution.sweeper import sweep_once
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from tests.approvals.support import action_of, approval_of, deployer, event_types, force_expiry, submit_call
from tests.support.http_target import TargetServer

DELETE_RULE = "p, role:http-writer, http:127.0.0.1:*/**, delete, approve"


def refused(runtime: Runtime, action_id: str, identity: str, verdict: str = "approve", **kwargs: object) -> RefusalCode:
    with pytest.raises(ApprovalRefused) as caught:
        decide(runtime, action_id, identity, verdict, via="cli", **kwargs)  # type: ignore[arg-type]
    return caught.value.code


def test_a_call_policy_marks_approve_waits_with_a_request_bound_to_a_digest(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    key = deployer(gate_runtime)
    url = f"{target_server.base_url}/items/7"
    action_id = submit_call(gate_runtime, key, method="DELETE", url=url, on_behalf_of="alice@example.com")

    action = action_of(gate_runtime, action_id)
    approval = approval_of(gate_runtime, action_id)
    assert action.status == "awaiting_approval"
    assert approval.status == "pending"
    assert approval.agent == "agent:deployer"
    assert approval.on_behalf_of == "user:alice@example.com"
    assert approval.agent_reason == "clean up a test resource"
    assert approval.targets == [
        {"object": f"http:127.0.0.1:{target_server.port}/items/7", "act": "delete", "effect": "approve"}
    ]
    assert approval.preview == {"method": "DELETE", "url": url, "json": None}
    assert [r["rule"] for r in approval.rules] == [DELETE_RULE]
    assert approval.quorum == 1
    assert timedelta(minutes=59) < approval.expires_at - utcnow() <= timedelta(hours=1)
    assert approval.digest == approval_digest(
        agent="agent:deployer",
        on_behalf_of="user:alice@example.com",
        tool="http.request",
        args=action.args,
        targets=[{"object": f"http:127.0.0.1:{target_server.port}/items/7", "act": "delete"}],
        preview=action.preview,
        policy_version=gate_runtime.policy.current.version,
    )
    assert event_types(gate_runtime, action_id) == ["action.received", "approval.requested", "action.awaiting_approval"]
    assert target_server.received() == []


def test_an_authorized_human_approves_and_the_call_is_queued_and_published(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    action_id = submit_call(
        gate_runtime, deployer(gate_runtime), method="DELETE", url=f"{target_server.base_url}/items/1"
    )

    result = decide(gate_runtime, action_id, "user:lead@example.com", "approve", via="cli")

    assert result.outcome == "approved"
    assert action_of(gate_runtime, action_id).status == "queued"
    assert gate_runtime.dispatcher.published == [action_id]  # type: ignore[attr-defined]
    assert run_action(gate_runtime, action_id) == "succeeded"
    assert [r.method for r in target_server.received("/items/1")] == ["DELETE"]
    approval = approval_of(gate_runtime, action_id)
    assert approval.status == "approved"
    assert approval.decided_by == "user:lead@example.com"
    assert approval.consumed_at is not None
    assert "approval.approved_by" in event_types(gate_runtime, action_id)
    assert "approval.used" in event_types(gate_runtime, action_id)


def test_the_agent_can_never_approve_its_own_call(gate_runtime: Runtime, target_server: TargetServer) -> None:
    action_id = submit_call(gate_runtime, deployer(gate_runtime), method="DELETE", url=f"{target_server.base_url}/x")

    assert refused(gate_runtime, action_id, "agent:deployer") is RefusalCode.INVALID_IDENTITY
    assert action_of(gate_runtime, action_id).status == "awaiting_approval"
    assert approval_of(gate_runtime, action_id).decisions == []


def test_the_human_the_agent_acts_for_cannot_approve_under_any_of_their_identities(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    action_id = submit_call(
        gate_runtime,
        deployer(gate_runtime),
        method="DELETE",
        url=f"{target_server.base_url}/x",
        on_behalf_of="oncall@example.com",
    )

    assert refused(gate_runtime, action_id, "user:oncall@example.com") is RefusalCode.SELF_APPROVAL
    assert refused(gate_runtime, action_id, "user:OnCall@Example.com") is not None
    # slack:U0123ABC is linked to user:oncall@example.com by a `g` rule: the same person.
    assert refused(gate_runtime, action_id, "slack:U0123ABC") is RefusalCode.SELF_APPROVAL
    assert action_of(gate_runtime, action_id).status == "awaiting_approval"
    assert approval_of(gate_runtime, action_id).decisions == []

    assert decide(gate_runtime, action_id, "user:lead@example.com", "approve", via="cli").outcome == "approved"


def test_someone_without_an_approver_role_is_refused_and_nothing_changes(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    action_id = submit_call(gate_runtime, deployer(gate_runtime), method="DELETE", url=f"{target_server.base_url}/x")

    assert refused(gate_runtime, action_id, "user:intern@example.com") is RefusalCode.NOT_AUTHORIZED
    assert (
        refused(gate_runtime, action_id, "user:intern@example.com", "deny", reason="no") is RefusalCode.NOT_AUTHORIZED
    )

    assert action_of(gate_runtime, action_id).status == "awaiting_approval"
    assert approval_of(gate_runtime, action_id).decisions == []
    assert event_types(gate_runtime, action_id).count("approval.refused") == 2


def test_approvers_need_the_approve_act_on_every_target(gate_runtime: Runtime, target_server: TargetServer) -> None:
    with (gate_runtime.policy.current.snapshot.directory / "rules.csv").open("a") as rules:
        rules.write(
            "g, user:items-only@example.com, role:items-approver\n"
            "p, role:items-approver, http:127.0.0.1:*/items/**, approve, allow\n"
        )
    assert gate_runtime.policy.reload()[0]
    key = deployer(gate_runtime)
    items = submit_call(gate_runtime, key, method="DELETE", url=f"{target_server.base_url}/items/1")
    other = submit_call(gate_runtime, key, method="DELETE", url=f"{target_server.base_url}/users/1")

    assert refused(gate_runtime, other, "user:items-only@example.com") is RefusalCode.NOT_AUTHORIZED
    assert decide(gate_runtime, items, "user:items-only@example.com", "approve", via="cli").outcome == "approved"


def test_a_quorum_of_two_needs_two_distinct_approvers(gate_runtime: Runtime, target_server: TargetServer) -> None:
    # policies/approvals.yaml: deletes under /prod/ need two approvers.
    action_id = submit_call(
        gate_runtime, deployer(gate_runtime), method="DELETE", url=f"{target_server.base_url}/prod/db"
    )
    assert approval_of(gate_runtime, action_id).quorum == 2

    first = decide(gate_runtime, action_id, "user:lead@example.com", "approve", via="cli")
    again = decide(gate_runtime, action_id, "user:lead@example.com", "approve", via="cli")

    assert first.outcome == "recorded"
    assert again.outcome == "duplicate"
    assert approval_of(gate_runtime, action_id).approvals == 1
    assert action_of(gate_runtime, action_id).status == "awaiting_approval"
    assert gate_runtime.dispatcher.published == []  # type: ignore[attr-defined]

    second = decide(gate_runtime, action_id, "user:oncall@example.com", "approve", via="cli")

    assert second.outcome == "approved"
    assert action_of(gate_runtime, action_id).status == "queued"
    assert approval_of(gate_runtime, action_id).approvals == 2
    assert run_action(gate_runtime, action_id) == "succeeded"


def test_any_deny_ends_the_request_and_the_agent_reads_the_reason(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    action_id = submit_call(
        gate_runtime, deployer(gate_runtime), method="DELETE", url=f"{target_server.base_url}/prod/db"
    )
    decide(gate_runtime, action_id, "user:lead@example.com", "approve", via="cli")

    result = decide(
        gate_runtime, action_id, "user:oncall@example.com", "deny", via="cli", reason="the prod DB is not yours to drop"
    )

    assert result.outcome == "rejected"
    action = action_of(gate_runtime, action_id)
    assert action.status == "rejected"
    assert action.status_reason == "rejected by user:oncall@example.com: the prod DB is not yours to drop"
    assert action.problem is not None
    assert action.problem["type"].endswith("/rejected-by-approver")
    assert action.problem["reason"] == "the prod DB is not yours to drop"
    assert action.problem["may_resubmit"] is False
    assert "does not make sense" in action.problem["hint"]
    assert refused(gate_runtime, action_id, "user:sre@example.com") is RefusalCode.NOT_PENDING
    assert run_action(gate_runtime, action_id) is None
    assert target_server.received() == []


def test_a_denial_may_invite_a_changed_call(gate_runtime: Runtime, target_server: TargetServer) -> None:
    action_id = submit_call(gate_runtime, deployer(gate_runtime), method="DELETE", url=f"{target_server.base_url}/x")

    decide(gate_runtime, action_id, "user:lead@example.com", "deny", via="cli", reason="only /x/tmp", may_resubmit=True)

    problem = action_of(gate_runtime, action_id).problem
    assert problem is not None
    assert problem["may_resubmit"] is True
    assert "Asking again makes sense only after changing the call" in problem["hint"]


def test_a_denial_needs_a_reason(gate_runtime: Runtime, target_server: TargetServer) -> None:
    action_id = submit_call(gate_runtime, deployer(gate_runtime), method="DELETE", url=f"{target_server.base_url}/x")

    assert refused(gate_runtime, action_id, "user:lead@example.com", "deny", reason="  ") is RefusalCode.MISSING_REASON


def test_a_decision_on_another_digest_does_not_count(gate_runtime: Runtime, target_server: TargetServer) -> None:
    action_id = submit_call(gate_runtime, deployer(gate_runtime), method="DELETE", url=f"{target_server.base_url}/x")

    code = refused(gate_runtime, action_id, "user:lead@example.com", digest="0" * 64)

    assert code is RefusalCode.DIGEST_MISMATCH
    assert action_of(gate_runtime, action_id).status == "awaiting_approval"


def test_expiry_fails_closed_and_nothing_runs(gate_runtime: Runtime, target_server: TargetServer) -> None:
    action_id = submit_call(gate_runtime, deployer(gate_runtime), method="DELETE", url=f"{target_server.base_url}/x")
    force_expiry(gate_runtime, action_id)

    report = sweep_once(gate_runtime)

    assert report.approvals_expired == 1
    action = action_of(gate_runtime, action_id)
    assert action.status == "expired"
    assert action.problem is not None and action.problem["type"].endswith("/approval-expired")
    assert "Asking again may make sense" in action.problem["hint"]
    assert approval_of(gate_runtime, action_id).status == "expired"
    assert refused(gate_runtime, action_id, "user:lead@example.com") is RefusalCode.NOT_PENDING
    assert run_action(gate_runtime, action_id) is None
    assert target_server.received() == []


def test_a_decision_after_expiry_expires_the_request_even_before_the_sweeper(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    action_id = submit_call(gate_runtime, deployer(gate_runtime), method="DELETE", url=f"{target_server.base_url}/x")
    force_expiry(gate_runtime, action_id)

    assert refused(gate_runtime, action_id, "user:lead@example.com") is RefusalCode.EXPIRED
    assert action_of(gate_runtime, action_id).status == "expired"


def test_per_rule_expiry_from_approvals_yaml(gate_runtime: Runtime, target_server: TargetServer) -> None:
    action_id = submit_call(
        gate_runtime, deployer(gate_runtime), method="DELETE", url=f"{target_server.base_url}/prod/x"
    )

    approval = approval_of(gate_runtime, action_id)

    assert timedelta(minutes=29) < approval.expires_at - approval.created_at <= timedelta(minutes=30)
    assert approval.gate["sources"] == ["approvals.yaml: gates[0]"]


def _replace_rule(policy_dir: Path, old: str, new: str) -> None:
    rules = policy_dir / "rules.csv"
    text = rules.read_text()
    assert old in text
    rules.write_text(text.replace(old, new))


def test_policy_now_denying_the_call_between_approval_and_execution_runs_nothing(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    action_id = submit_call(gate_runtime, deployer(gate_runtime), method="DELETE", url=f"{target_server.base_url}/x")
    decide(gate_runtime, action_id, "user:lead@example.com", "approve", via="cli")
    _replace_rule(gate_runtime.policy.current.snapshot.directory, DELETE_RULE, DELETE_RULE.replace("approve", "deny"))
    assert gate_runtime.policy.reload()[0]

    assert run_action(gate_runtime, action_id) == "failed"

    assert target_server.received() == []
    assert "no longer allows this call" in (action_of(gate_runtime, action_id).status_reason or "")


def test_an_approver_losing_the_role_before_execution_means_nothing_runs(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    action_id = submit_call(gate_runtime, deployer(gate_runtime), method="DELETE", url=f"{target_server.base_url}/x")
    decide(gate_runtime, action_id, "user:lead@example.com", "approve", via="cli")
    _replace_rule(
        gate_runtime.policy.current.snapshot.directory,
        "g, user:lead@example.com, role:approver-http",
        "g, user:lead@example.com, role:former-approver",
    )
    assert gate_runtime.policy.reload()[0]

    assert run_action(gate_runtime, action_id) == "failed"

    assert target_server.received() == []
    reason = action_of(gate_runtime, action_id).status_reason or ""
    assert "no longer lets user:lead@example.com approve" in reason
    assert "nothing ran" in reason


def test_an_action_changed_after_approval_does_not_run(gate_runtime: Runtime, target_server: TargetServer) -> None:
    action_id = submit_call(
        gate_runtime, deployer(gate_runtime), method="DELETE", url=f"{target_server.base_url}/tmp/1"
    )
    decide(gate_runtime, action_id, "user:lead@example.com", "approve", via="cli")
    with gate_runtime.db.session() as session:
        session.execute(
            update(Action)
            .where(col(Action.id) == action_id)
            .values(args={"method": "DELETE", "url": f"{target_server.base_url}/everything"})
        )

    assert run_action(gate_runtime, action_id) == "failed"

    assert target_server.received() == []
    assert "differs from what was approved" in (action_of(gate_runtime, action_id).status_reason or "")


def test_cancelling_an_awaiting_action_closes_its_request(gate_runtime: Runtime, target_server: TargetServer) -> None:
    key = deployer(gate_runtime)
    action_id = submit_call(gate_runtime, key, method="DELETE", url=f"{target_server.base_url}/x")
    with gate_runtime.db.session() as session:
        agent = authenticate(session, key)
    assert agent is not None
    before = utcnow()
    cancel_action(gate_runtime, agent, action_id)

    approval = approval_of(gate_runtime, action_id)
    assert approval.status == "cancelled"
    assert approval.decided_at is not None
    assert before <= approval.decided_at <= utcnow()
    assert refused(gate_runtime, action_id, "user:lead@example.com") is RefusalCode.NOT_PENDING
    # The closing is on the record, by the agent that cancelled, in the cancelling transaction.
    with gate_runtime.db.session() as session:
        events = session.exec(
            select(AuditEvent).where(col(AuditEvent.action_id) == action_id).order_by(col(AuditEvent.id))
        ).all()
    [closed] = [event for event in events if event.event_type == "approval.cancelled"]
    assert closed.actor == agent.principal
    assert json.loads(closed.data_json)["approval_id"] == approval.id
    assert [e.event_type for e in events] == [
        "action.received",
        "approval.requested",
        "action.awaiting_approval",
        "action.cancelled",
        "approval.cancelled",
        "approval.refused",  # the late click above
    ]


def test_cancelling_an_action_without_an_approval_writes_no_approval_event(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    key = deployer(gate_runtime)
    action_id = submit_call(gate_runtime, key, method="GET", url=f"{target_server.base_url}/x")
    assert action_of(gate_runtime, action_id).status == "queued"
    with gate_runtime.db.session() as session:
        agent = authenticate(session, key)
    assert agent is not None
    cancel_action(gate_runtime, agent, action_id)

    assert action_of(gate_runtime, action_id).status == "cancelled"
    assert not [t for t in event_types(gate_runtime, action_id) if t.startswith("approval.")]


def test_one_person_under_two_identities_counts_once_toward_a_quorum(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    # slack:U0LEAD1 is linked to user:lead@example.com by a g rule (tests/approvals/support.py).
    action_id = submit_call(
        gate_runtime, deployer(gate_runtime), method="DELETE", url=f"{target_server.base_url}/prod/x"
    )
    decide(gate_runtime, action_id, "user:lead@example.com", "approve", via="cli")

    again = decide(gate_runtime, action_id, "slack:U0LEAD1", "approve", via="slack")
    shouting = decide(gate_runtime, action_id, "user:LEAD@example.com", "approve", via="cli")

    assert again.outcome == shouting.outcome == "duplicate"
    assert "as user:lead@example.com" in again.message
    assert approval_of(gate_runtime, action_id).approvals == 1
    assert action_of(gate_runtime, action_id).status == "awaiting_approval"
    assert (
        refused(gate_runtime, action_id, "slack:U0LEAD1", "deny", reason="changed my mind") is RefusalCode.NOT_PENDING
    )
