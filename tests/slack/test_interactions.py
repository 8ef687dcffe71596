"""Approving and denying from Slack, against a local fake of the Slack Web API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from outbox.approvals.schemas import ApprovalOut
from outbox.approvals.service import decide
from outbox.deliveries.service import KIND_SLACK_MESSAGE, deliver_due
from outbox.execution.service import run_action
from outbox.execution.sweeper import sweep_once
from outbox.runtime import Runtime
from tests.approvals.support import action_of, approval_of, client_for, deliveries, deployer, make_due, submit_call
from tests.slack.fake_slack import CHANNEL_ID, FakeSlack
from tests.slack.payloads import block_action, deny_submission, form_body, signed_headers
from tests.support.http_target import TargetServer


def send(client: TestClient, payload: dict[str, Any], **extra_headers: str) -> Any:
    body = form_body(payload)
    return client.post("/slack/interactions", content=body, headers={**signed_headers(body), **extra_headers})


def posted(runtime: Runtime, fake_slack: FakeSlack, url: str, **kwargs: Any) -> tuple[str, ApprovalOut]:
    """Submit a call that needs approval and let the sweeper post it to Slack."""
    action_id = submit_call(runtime, deployer(runtime), method="DELETE", url=url, **kwargs)
    sweep_once(runtime)
    fake_slack.wait_for("chat.postMessage")
    return action_id, approval_of(runtime, action_id)


def click(user_id: str, approval: ApprovalOut, button: str = "outbox_approve", **kwargs: Any) -> dict[str, Any]:
    return block_action(user_id=user_id, action_id=button, value=f"{approval.id}:{approval.digest}", **kwargs)


def blocks_text(call: Any) -> str:
    return json.dumps(call.body["blocks"])


def test_a_request_is_posted_with_everything_an_approver_needs(
    slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer
) -> None:
    action_id, approval = posted(
        slack_runtime,
        fake_slack,
        f"{target_server.base_url}/items/3",
        on_behalf_of="bob@example.com",
        reason="<!channel> stale item, see <https://evil.example|this>",
    )

    [message] = fake_slack.calls_to("chat.postMessage")
    assert message.body["channel"] == "#approvals"
    # Slack fetches nothing the agent wrote: no link or media previews.
    assert message.body["unfurl_links"] is False
    assert message.body["unfurl_media"] is False
    text = blocks_text(message)
    assert "Approval needed: http.request" in text
    assert "agent:deployer" in text and "bob@example.com" in text
    assert f"delete  http:127.0.0.1:{target_server.port}/items/3" in text
    assert "p, role:http-writer, http:127.0.0.1:*/**, delete, approve" in text
    # What the agent wrote cannot ping a channel or hide a link.
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    buttons = next(b for b in message.body["blocks"] if b["type"] == "actions")["elements"]
    assert [b["action_id"] for b in buttons] == ["outbox_approve", "outbox_deny"]
    assert {b["value"] for b in buttons} == {f"{approval.id}:{approval.digest}"}
    assert approval.slack is not None
    assert approval.slack["channel"] == "#approvals"
    assert approval.slack["channel_id"] == CHANNEL_ID
    assert approval.slack["ts"]
    assert action_of(slack_runtime, action_id).status == "awaiting_approval"


def test_approve_click_queues_the_call_and_updates_the_message_twice(
    slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer
) -> None:
    action_id, approval = posted(slack_runtime, fake_slack, f"{target_server.base_url}/items/4")

    with client_for(slack_runtime) as client:
        response = send(client, click("U0LEAD1", approval))

    assert response.status_code == 200
    assert action_of(slack_runtime, action_id).status == "queued"
    assert slack_runtime.dispatcher.published == [action_id]  # type: ignore[attr-defined]
    [decided] = fake_slack.calls_to("chat.update")
    assert decided.body["channel"] == CHANNEL_ID
    assert decided.body["ts"] == approval_of(slack_runtime, action_id).slack["ts"]  # type: ignore[index]
    assert "<@U0LEAD1> approved" in blocks_text(decided)
    assert "outbox_approve" not in blocks_text(decided)  # the buttons are gone

    assert run_action(slack_runtime, action_id) == "succeeded"
    sweep_once(slack_runtime)

    executed = fake_slack.wait_for("chat.update", 2)[1]
    assert "Outcome: succeeded" in blocks_text(executed)
    assert "HTTP 200" in blocks_text(executed)
    sweep_once(slack_runtime)
    assert len(fake_slack.calls_to("chat.update")) == 2  # nothing left to say


def test_a_failed_execution_is_shown_on_the_message(
    slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer
) -> None:
    action_id, approval = posted(slack_runtime, fake_slack, f"{target_server.base_url}/status/404")
    decide(slack_runtime, approval.id, "slack:U0LEAD1", "approve", via="slack")
    deliver_due(slack_runtime)

    assert run_action(slack_runtime, action_id) == "failed"
    sweep_once(slack_runtime)

    assert "Outcome: failed" in blocks_text(fake_slack.wait_for("chat.update", 2)[1])


def test_an_unauthorized_click_gets_an_ephemeral_reply_and_changes_nothing(
    slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer
) -> None:
    action_id, approval = posted(slack_runtime, fake_slack, f"{target_server.base_url}/x")

    with client_for(slack_runtime) as client:
        approve = send(client, click("U0INTERN", approval))
        deny = send(client, click("U0INTERN", approval, "outbox_deny"))

    assert approve.status_code == deny.status_code == 200
    replies = fake_slack.calls_to("chat.postEphemeral")
    assert [r.body["user"] for r in replies] == ["U0INTERN", "U0INTERN"]
    assert all(r.body["channel"] == CHANNEL_ID for r in replies)
    assert "slack:U0INTERN may not approve or deny" in replies[0].body["text"]
    assert "Nothing changed" in replies[0].body["text"]
    assert fake_slack.calls_to("views.open") == []
    assert fake_slack.calls_to("chat.update") == []
    assert action_of(slack_runtime, action_id).status == "awaiting_approval"
    assert approval_of(slack_runtime, action_id).decisions == []


def test_the_person_the_agent_acts_for_cannot_approve_from_slack(
    slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer
) -> None:
    # slack:U0LEAD1 is linked to user:lead@example.com by a g rule.
    action_id, approval = posted(
        slack_runtime, fake_slack, f"{target_server.base_url}/x", on_behalf_of="lead@example.com"
    )

    with client_for(slack_runtime) as client:
        send(client, click("U0LEAD1", approval))

    [reply] = fake_slack.calls_to("chat.postEphemeral")
    assert "cannot approve it" in reply.body["text"]
    assert action_of(slack_runtime, action_id).status == "awaiting_approval"


def test_double_clicks_count_once(slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer) -> None:
    action_id, approval = posted(slack_runtime, fake_slack, f"{target_server.base_url}/prod/x")  # quorum 2

    with client_for(slack_runtime) as client:
        first = send(client, click("U0LEAD1", approval, action_ts="1700000001.000001"))
        second = send(client, click("U0LEAD1", approval, action_ts="1700000001.400001"))

    assert first.status_code == second.status_code == 200
    shown = approval_of(slack_runtime, action_id)
    assert shown.approvals == 1
    assert [d.approver for d in shown.decisions] == ["slack:U0LEAD1"]
    assert action_of(slack_runtime, action_id).status == "awaiting_approval"
    replies = [r.body["text"] for r in fake_slack.calls_to("chat.postEphemeral")]
    assert replies[0].startswith("approval recorded (1 of 2)")
    assert "already decided" in replies[1]


def test_slack_retries_are_idempotent(
    slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer
) -> None:
    action_id, approval = posted(slack_runtime, fake_slack, f"{target_server.base_url}/prod/x")
    payload = click("U0LEAD1", approval, action_ts="1700000002.000001")

    with client_for(slack_runtime) as client:
        original = send(client, payload)
        # Slack did not see our answer in time and sends the same interaction again, newly signed.
        retry_1 = send(client, payload, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
        retry_2 = send(client, payload, **{"X-Slack-Retry-Num": "2", "X-Slack-Retry-Reason": "http_timeout"})

    assert original.status_code == retry_1.status_code == retry_2.status_code == 200
    assert len(approval_of(slack_runtime, action_id).decisions) == 1
    assert len(fake_slack.calls_to("chat.postEphemeral")) == 1
    assert len(fake_slack.calls_to("chat.update")) == 1


def test_a_quorum_of_two_from_slack(slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer) -> None:
    action_id, approval = posted(slack_runtime, fake_slack, f"{target_server.base_url}/prod/x")

    with client_for(slack_runtime) as client:
        send(client, click("U0LEAD1", approval))
        assert action_of(slack_runtime, action_id).status == "awaiting_approval"
        assert "1 of 2" in blocks_text(fake_slack.calls_to("chat.update")[-1])
        send(client, click("U0SRE22", approval))

    assert action_of(slack_runtime, action_id).status == "queued"
    final = blocks_text(fake_slack.calls_to("chat.update")[-1])
    assert "<@U0LEAD1> approved" in final and "<@U0SRE22> approved" in final


def test_deny_opens_a_modal_and_its_reason_reaches_the_agent(
    slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer
) -> None:
    action_id, approval = posted(slack_runtime, fake_slack, f"{target_server.base_url}/x")

    with client_for(slack_runtime) as client:
        opened = send(client, click("U0SRE22", approval, "outbox_deny", trigger_id="trig-123"))
        assert opened.status_code == 200
        assert action_of(slack_runtime, action_id).status == "awaiting_approval"  # only the form so far
        [view_call] = fake_slack.calls_to("views.open")
        assert view_call.body["trigger_id"] == "trig-123"
        modal = view_call.body["view"]
        assert modal["callback_id"] == "outbox_deny_modal"
        assert json.loads(modal["private_metadata"]) == {"approval_id": approval.id, "digest": approval.digest}

        submitted = send(
            client,
            deny_submission(
                user_id="U0SRE22", approval_id=approval.id, digest=approval.digest, reason="use the archive job"
            ),
        )

    assert submitted.status_code == 200
    assert submitted.content == b""  # closes the modal
    action = action_of(slack_runtime, action_id)
    assert action.status == "rejected"
    assert action.problem is not None and action.problem["reason"] == "use the archive job"
    assert action.problem["approver"] == "slack:U0SRE22"
    [update] = fake_slack.calls_to("chat.update")
    assert "<@U0SRE22> denied" in blocks_text(update) and "use the archive job" in blocks_text(update)


def test_a_denial_form_from_someone_not_allowed_shows_an_error_and_changes_nothing(
    slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer
) -> None:
    action_id, approval = posted(slack_runtime, fake_slack, f"{target_server.base_url}/x")

    with client_for(slack_runtime) as client:
        response = send(
            client,
            deny_submission(user_id="U0INTERN", approval_id=approval.id, digest=approval.digest, reason="nope"),
        )

    assert response.status_code == 200
    assert response.json()["response_action"] == "errors"
    assert "may not approve or deny" in response.json()["errors"]["reason"]
    assert action_of(slack_runtime, action_id).status == "awaiting_approval"


def test_a_click_on_a_decided_request_is_answered_not_applied(
    slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer
) -> None:
    action_id, approval = posted(slack_runtime, fake_slack, f"{target_server.base_url}/x")
    decide(slack_runtime, approval.id, "user:oncall@example.com", "deny", via="cli", reason="no")

    with client_for(slack_runtime) as client:
        send(client, click("U0LEAD1", approval))

    assert "already rejected by user:oncall@example.com" in fake_slack.calls_to("chat.postEphemeral")[0].body["text"]
    assert action_of(slack_runtime, action_id).status == "rejected"


def test_slack_rate_limits_are_retried_after_retry_after(
    slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer
) -> None:
    fake_slack.rate_limit("chat.postMessage", times=1, retry_after=7)
    action_id = submit_call(slack_runtime, deployer(slack_runtime), method="DELETE", url=f"{target_server.base_url}/x")

    sweep_once(slack_runtime)

    [pending] = deliveries(slack_runtime, KIND_SLACK_MESSAGE)
    assert pending.state == "pending"
    assert "429" in (pending.last_error or "")
    assert 6 < (pending.not_before - pending.updated_at).total_seconds() <= 7
    sweep_once(slack_runtime)
    assert fake_slack.calls_to("chat.postMessage") == []  # not before Retry-After

    make_due(slack_runtime)
    sweep_once(slack_runtime)

    assert len(fake_slack.calls_to("chat.postMessage")) == 1
    assert approval_of(slack_runtime, action_id).slack["ts"] is not None  # type: ignore[index]


def test_a_refused_slack_call_gives_up_and_the_approval_still_works(
    slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer
) -> None:
    fake_slack.refuse("chat.postMessage", error="channel_not_found")
    action_id = submit_call(slack_runtime, deployer(slack_runtime), method="DELETE", url=f"{target_server.base_url}/x")

    sweep_once(slack_runtime)
    sweep_once(slack_runtime)

    [dead] = deliveries(slack_runtime, KIND_SLACK_MESSAGE)
    assert dead.state == "dead" and "channel_not_found" in (dead.last_error or "")
    assert decide(slack_runtime, action_id, "user:lead@example.com", "approve", via="api").outcome == "approved"


@pytest.mark.parametrize("outage", ["ratelimited", "connection_refused"])
def test_a_slack_outage_after_a_click_keeps_the_decision_and_the_update_follows(
    outage: str, slack_runtime: Runtime, fake_slack: FakeSlack, target_server: TargetServer
) -> None:
    action_id, approval = posted(slack_runtime, fake_slack, f"{target_server.base_url}/x")

    with client_for(slack_runtime) as client:
        body = form_body(click("U0LEAD1", approval))
        headers = signed_headers(body)
        if outage == "ratelimited":
            fake_slack.rate_limit(times=1, retry_after=1)
        else:
            fake_slack.go_down()
        response = client.post("/slack/interactions", content=body, headers=headers)

    assert response.status_code == 200
    assert action_of(slack_runtime, action_id).status == "queued"
    if outage == "connection_refused":
        fake_slack.come_back()
    make_due(slack_runtime)
    sweep_once(slack_runtime)
    assert "<@U0LEAD1> approved" in blocks_text(fake_slack.wait_for("chat.update")[0])
