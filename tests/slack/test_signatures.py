"""`POST /slack/interactions` refuses anything Slack did not sign, before doing anything else."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import pytest

from outbox.runtime import Runtime
from tests.approvals.support import action_of, approval_of, client_for, deployer, submit_call
from tests.slack.payloads import block_action, form_body, signed_headers
from tests.support.http_target import TargetServer


@pytest.fixture
def click(slack_runtime: Runtime, target_server: TargetServer) -> tuple[str, str]:
    """A valid Approve click by an approver, as a form body, and the action it is about."""
    action_id = submit_call(slack_runtime, deployer(slack_runtime), method="DELETE", url=f"{target_server.base_url}/x")
    approval = approval_of(slack_runtime, action_id)
    payload = block_action(user_id="U0LEAD1", action_id="outbox_approve", value=f"{approval.id}:{approval.digest}")
    return form_body(payload), action_id


def assert_untouched(runtime: Runtime, action_id: str) -> None:
    assert action_of(runtime, action_id).status == "awaiting_approval"
    assert approval_of(runtime, action_id).decisions == []


def test_a_forged_signature_is_refused(slack_runtime: Runtime, click: tuple[str, str]) -> None:
    body, action_id = click
    with client_for(slack_runtime) as client:
        response = client.post(
            "/slack/interactions", content=body, headers=signed_headers(body, secret="not-the-secret")
        )

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert_untouched(slack_runtime, action_id)


def test_a_body_changed_after_signing_is_refused(slack_runtime: Runtime, click: tuple[str, str]) -> None:
    body, action_id = click
    headers = signed_headers(body)
    with client_for(slack_runtime) as client:
        response = client.post("/slack/interactions", content=body.replace("U0LEAD1", "U0SRE22"), headers=headers)

    assert response.status_code == 401
    assert_untouched(slack_runtime, action_id)


def test_a_stale_signature_is_refused(slack_runtime: Runtime, click: tuple[str, str]) -> None:
    body, action_id = click
    six_minutes_ago = int(time.time()) - 6 * 60
    with client_for(slack_runtime) as client:
        response = client.post(
            "/slack/interactions", content=body, headers=signed_headers(body, timestamp=six_minutes_ago)
        )

    assert response.status_code == 401
    assert_untouched(slack_runtime, action_id)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=00"},
        {"X-Slack-Request-Timestamp": "9" * 40, "X-Slack-Signature": "v0=00"},
        {"X-Slack-Request-Timestamp": str(int(time.time()))},
    ],
    ids=["none", "non-numeric-timestamp", "huge-timestamp", "no-signature"],
)
def test_missing_or_malformed_signature_headers_are_refused(
    slack_runtime: Runtime, click: tuple[str, str], headers: dict[str, str]
) -> None:
    body, action_id = click
    with client_for(slack_runtime) as client:
        response = client.post(
            "/slack/interactions",
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
        )

    assert response.status_code == 401
    assert_untouched(slack_runtime, action_id)


def test_a_replayed_request_is_refused(slack_runtime: Runtime, click: tuple[str, str]) -> None:
    body, action_id = click
    headers = signed_headers(body)
    with client_for(slack_runtime) as client:
        first = client.post("/slack/interactions", content=body, headers=headers)
        replay = client.post("/slack/interactions", content=body, headers=headers)

    assert first.status_code == 200
    assert replay.status_code == 401
    assert "replay" in replay.json()["detail"]
    assert action_of(slack_runtime, action_id).status == "queued"
    assert len(approval_of(slack_runtime, action_id).decisions) == 1


def test_a_valid_signature_over_a_non_slack_body_is_a_client_error_not_a_crash(slack_runtime: Runtime) -> None:
    body = "payload=%7Bnot-json"
    with client_for(slack_runtime) as client:
        response = client.post("/slack/interactions", content=body, headers=signed_headers(body))

    assert response.status_code == 400


@pytest.mark.parametrize(
    "payload_json",
    [
        '{"type": "block_actions", "n": ' + "9" * 5000 + "}",  # past Python's int-from-text limit
        '{"type": "block_actions", "n": NaN}',
        '{"type": "block_actions", "n": 1e400}',
        '{"type": "block_actions", "n": "\\ud800"}',
        '{"type": "block_actions", "type": "view_submission"}',
    ],
    ids=["5000-digit-integer", "nan", "overflowing-float", "lone-surrogate", "duplicate-key"],
)
def test_a_validly_signed_payload_with_json_we_do_not_hold_is_400(
    slack_runtime: Runtime, click: tuple[str, str], payload_json: str
) -> None:
    _, action_id = click
    body = urlencode({"payload": payload_json})
    with client_for(slack_runtime) as client:
        response = client.post("/slack/interactions", content=body, headers=signed_headers(body))

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert_untouched(slack_runtime, action_id)


def test_without_a_signing_secret_the_endpoint_is_off(gate_runtime: Runtime, click: tuple[str, str]) -> None:
    body, _ = click
    with client_for(gate_runtime) as client:
        response = client.post("/slack/interactions", content=body, headers=signed_headers(body))

    assert response.status_code == 503
