"""Interaction payloads shaped like Slack's, signed exactly as Slack signs them.

Slack sends `application/x-www-form-urlencoded` with one field, `payload` (JSON), and the headers
`X-Slack-Request-Timestamp` and `X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret,
"v0:<timestamp>:<raw body>")>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def form_body(payload: dict[str, Any]) -> str:
    return urlencode({"payload": json.dumps(payload)})


def slack_signature(secret: str, timestamp: str, body: str) -> str:
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return f"v0={digest}"


def signed_headers(body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": slack_signature(secret, stamp, body),
    }


def block_action(
    *,
    user_id: str,
    action_id: str,
    value: str,
    action_ts: str | None = None,
    channel_id: str = "C0APPROVALS",
    message_ts: str = "1700000000.000001",
    trigger_id: str = "13345224609.738474920.8088930838d88f008e0",
) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "team": {"id": "T0TEAM", "domain": "example"},
        "user": {"id": user_id, "username": user_id.lower(), "team_id": "T0TEAM"},
        "api_app_id": "A0OUTBOX",
        "token": "legacy-verification-token-unused",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel_id, "is_ephemeral": False},
        "trigger_id": trigger_id,
        "channel": {"id": channel_id, "name": "approvals"},
        "message": {"type": "message", "ts": message_ts, "text": "Approval needed"},
        "response_url": "https://hooks.slack.invalid/actions/T0TEAM/1/abc",
        "actions": [
            {
                "type": "button",
                "block_id": "outbox_decision",
                "action_id": action_id,
                "value": value,
                "action_ts": action_ts or f"{time.time():.6f}",
            }
        ],
    }


def deny_submission(
    *, user_id: str, approval_id: str, digest: str, reason: str, may_resubmit: bool = False
) -> dict[str, Any]:
    selected = [{"text": {"type": "plain_text", "text": "Yes"}, "value": "yes"}] if may_resubmit else []
    return {
        "type": "view_submission",
        "team": {"id": "T0TEAM"},
        "user": {"id": user_id, "team_id": "T0TEAM"},
        "api_app_id": "A0OUTBOX",
        "trigger_id": "13345224609.738474920.1111",
        "view": {
            "id": "V0DENYFORM",
            "type": "modal",
            "callback_id": "outbox_deny_modal",
            "private_metadata": json.dumps({"approval_id": approval_id, "digest": digest}),
            "hash": "156772938.1827394",
            "state": {
                "values": {
                    "reason": {"reason": {"type": "plain_text_input", "value": reason}},
                    "resubmit": {"resubmit": {"type": "checkboxes", "selected_options": selected}},
                }
            },
        },
    }
