"""The Block Kit message: escaped, within Slack's limits, and faithful to the request."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from outbox.approvals.schemas import ApprovalOut, DecisionOut
from outbox.slack.blocks import approval_message, deny_modal, escape

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def approval(**overrides: object) -> ApprovalOut:
    values: dict[str, object] = {
        "id": "apr_1",
        "status": "pending",
        "action_id": "act_1",
        "action_status": "awaiting_approval",
        "action_status_reason": None,
        "agent": "agent:deployer",
        "on_behalf_of": "bob@example.com",
        "agent_reason": "tidy up",
        "tool": "http.request",
        "args": {"method": "DELETE", "url": "http://127.0.0.1:1/x"},
        "targets": [{"object": "http:127.0.0.1:1/x", "act": "delete", "effect": "approve"}],
        "preview": {"method": "DELETE", "url": "http://127.0.0.1:1/x", "json": None},
        "rules": [{"rule": "p, role:http-writer, http:127.0.0.1:*/**, delete, approve", "source": "rules.csv:11"}],
        "gate": {},
        "policy_version": "sha256:abc",
        "digest": "d" * 64,
        "quorum": 1,
        "approvals": 0,
        "decisions": [],
        "created_at": NOW,
        "expires_at": NOW + timedelta(hours=1),
        "decided_at": None,
        "decided_by": None,
        "reason": None,
        "may_resubmit": None,
        "consumed_at": None,
        "slack": None,
        "links": {},
    }
    values.update(overrides)
    return ApprovalOut.model_validate(values)


def test_agent_text_is_escaped_everywhere() -> None:
    hostile = "<!here> <@U0BOSS> & <https://evil.example|click>"
    _text, blocks = approval_message(
        approval(agent_reason=hostile, on_behalf_of=hostile, preview={"note": hostile}, tool="http.request")
    )
    rendered = json.dumps(blocks)

    assert "<!here>" not in rendered
    assert "<@U0BOSS>" not in rendered
    assert "<https://evil" not in rendered
    assert "&lt;!here&gt;" in rendered
    assert escape("a&b<c>") == "a&amp;b&lt;c&gt;"


def test_every_target_is_listed_within_slack_limits() -> None:
    targets = [{"object": f"k8s:staging/namespace/feature-branch-{n:03}", "act": "delete"} for n in range(300)]
    _text, blocks = approval_message(approval(targets=targets))

    assert len(blocks) <= 50
    for block in blocks:
        assert len(block.get("text", {}).get("text", "")) <= 3000
    rendered = json.dumps(blocks)
    assert "feature-branch-000" in rendered
    assert "feature-branch-299" in rendered or "more target(s)" in rendered


def test_a_decided_request_shows_who_when_and_why_without_buttons() -> None:
    decided = approval(
        status="rejected",
        action_status="rejected",
        decisions=[
            DecisionOut(
                approver="slack:U0SRE22", verdict="deny", reason="freeze", via="slack", digest="d" * 64, created_at=NOW
            )
        ],
        may_resubmit=False,
    )
    _text, blocks = approval_message(decided)
    rendered = json.dumps(blocks)

    assert "Denied: http.request" in rendered
    assert "<@U0SRE22> denied" in rendered and "freeze" in rendered
    assert "<!date^" in rendered
    assert "outbox_approve" not in rendered


def test_the_deny_modal_carries_the_request_and_its_digest() -> None:
    modal = deny_modal(approval_id="apr_1", digest="d" * 64, tool="http.request")

    assert json.loads(modal["private_metadata"]) == {"approval_id": "apr_1", "digest": "d" * 64}
    assert [b.get("block_id") for b in modal["blocks"] if b["type"] == "input"] == ["reason", "resubmit"]
