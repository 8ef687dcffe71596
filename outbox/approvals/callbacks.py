"""Per-action callbacks: the outbox POSTs the action to the agent's `callback_url` when it
reaches a terminal state, signed, and retried until the receiver answers 2xx.

Terminal states are found by reconciliation rather than by hooks: the sweeper looks for
terminal actions with a callback URL and no callback delivery yet, and queues exactly one. No
code path that finishes an action can forget to notify.

Signature (`X-Outbox-Signature: t=<unix seconds>,v1=<hex>`): HMAC-SHA256 with
`OUTBOX_CALLBACK_SECRET` over `<t>.<raw body>`, the scheme Stripe and Slack use. Receivers
recompute it over the raw body, compare in constant time, and refuse stale timestamps;
`X-Outbox-Delivery` is stable across retries, for de-duplication.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import timedelta

import httpx
from sqlalchemy import exists
from sqlmodel import Session, col, select

from outbox.actions.models import TERMINAL_STATUSES, Action
from outbox.actions.schemas import ActionOut
from outbox.approvals import delivery
from outbox.approvals.models import Delivery
from outbox.canonical import canonical_json
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow

SIGNATURE_HEADER = "X-Outbox-Signature"
DELIVERY_HEADER = "X-Outbox-Delivery"
EVENT_HEADER = "X-Outbox-Event"
# Terminal actions older than this are not looked at again (their callbacks were queued long ago).
_LOOKBACK = timedelta(days=2)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, *, tolerance_seconds: int = 300, now: float | None = None) -> bool:
    """What a receiver does; here for tests and as the reference implementation."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


def enqueue_due_callbacks(session: Session, *, limit: int = 500) -> int:
    """Queue one callback for each terminal action that has a URL and none queued yet."""
    already = exists().where(
        (col(Delivery.kind) == delivery.KIND_CALLBACK) & (col(Delivery.subject_id) == col(Action.id))
    )
    due = session.exec(
        select(Action.id)
        .where(
            col(Action.callback_url).is_not(None)
            & col(Action.status).in_([s.value for s in TERMINAL_STATUSES])
            & (col(Action.finished_at) >= utcnow() - _LOOKBACK)
            & ~already
        )
        .limit(limit)
    ).all()
    for action_id in due:
        delivery.enqueue(
            session, kind=delivery.KIND_CALLBACK, subject_id=action_id, coalesce_key=f"callback:{action_id}"
        )
    return len(due)


def deliver_callback(runtime: Runtime, claimed: delivery.ClaimedDelivery) -> delivery.DeliveryResult:
    settings = runtime.settings
    if settings.callback_secret is None:
        return delivery.GiveUp("OUTBOX_CALLBACK_SECRET is not set: callbacks cannot be signed, so none is sent")
    with runtime.db.session() as session:
        action = session.get(Action, claimed.subject_id)
    if action is None or action.callback_url is None:
        return delivery.GiveUp("the action or its callback URL no longer exists")
    body = canonical_json(
        {
            "event": f"action.{action.status}",
            "delivery_id": claimed.id,
            "action": ActionOut.of(action).model_dump(mode="json"),
        }
    ).encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "agent-outbox-callback/1",
        SIGNATURE_HEADER: sign(settings.callback_secret.get_secret_value(), int(time.time()), body),
        DELIVERY_HEADER: claimed.id,
        EVENT_HEADER: f"action.{action.status}",
    }
    try:
        with httpx.Client(timeout=settings.callback_timeout_seconds, follow_redirects=False, trust_env=False) as client:
            reply = client.post(action.callback_url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return delivery.RetryLater(f"POST {action.callback_url}: {type(exc).__name__}: {exc}")
    status = reply.status_code
    if 200 <= status < 300:
        return delivery.Delivered(f"HTTP {status}")
    if status in (408, 425, 429) or status >= 500:
        return delivery.RetryLater(f"HTTP {status}", retry_after=_retry_after(reply.headers.get("retry-after")))
    return delivery.GiveUp(f"the receiver refused the callback with HTTP {status}")


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return min(float(value.strip()), 3600.0)
