"""Per-action callbacks: the outbox POSTs the action to the agent's `callback_url` when it
reaches a terminal state, signed, and retried until the receiver answers 2xx.

Terminal states are found by reconciliation rather than by hooks: the sweeper looks for
terminal actions with a callback URL and no callback delivery yet, and queues exactly one. No
code path that finishes an action can forget to notify.

Signature (`X-Outbox-Signature: t=<unix seconds>,v1=<hex>`): HMAC-SHA256 with
`OUTBOX_CALLBACK_SECRET` over `<t>.<raw body>`, the scheme Stripe and Slack use. Receivers
recompute it over the raw body, compare in constant time, and refuse stale timestamps;
`X-Outbox-Delivery` is stable across retries, for de-duplication.

A callback is an outbound request the outbox makes on the agent's behalf, so policy decides it
like any other: act `callback` on the `http:` object of the URL's canonical form
(`outbox/policy/outbound.py`), for the agent that submitted. Only `allow` permits it (no human
approves a callback). It is decided at submission (refused with a 422) and again at delivery
against the policy then current, so a revoked permission stops callbacks; a call that policy
denied is never called back, whatever its URL.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import timedelta
from typing import TYPE_CHECKING

import httpx
from sqlalchemy import exists
from sqlmodel import Session, col, select

from outbox.actions.models import TERMINAL_STATUSES, Action, ActionStatus
from outbox.actions.schemas import ActionOut
from outbox.agents.models import Agent
from outbox.agents.service import AuthenticatedAgent
from outbox.canonical import canonical_json
from outbox.deliveries import results as delivery
from outbox.deliveries.models import Delivery
from outbox.deliveries.repository import enqueue
from outbox.errors import ValidationFailed
from outbox.http_clients import SHARED_CLIENTS, ClientSettings
from outbox.policy.engine import PolicyDecision, PolicySnapshot
from outbox.policy.matching import Subject
from outbox.policy.outbound import CALLBACK_ACT, callback_target
from outbox.retry_after import parse_retry_after
from outbox.sqltypes import utcnow
from outbox.urls import CanonicalURL, URLRefused, parse_url

if TYPE_CHECKING:
    from outbox.runtime import Runtime

SIGNATURE_HEADER = "X-Outbox-Signature"
DELIVERY_HEADER = "X-Outbox-Delivery"
EVENT_HEADER = "X-Outbox-Event"
# Terminal actions older than this are not looked at again (their callbacks were queued long ago).
_LOOKBACK = timedelta(days=2)
# Terminal states that are called back: every one but `denied` (a refused request causes no
# outbound request at all).
CALLED_BACK_STATUSES = frozenset(TERMINAL_STATUSES - {ActionStatus.DENIED})
# A receiver asking for a longer pause is retried after an hour anyway.
MAX_RETRY_AFTER_SECONDS = 3600.0


def decide_callback(snapshot: PolicySnapshot, subject: Subject, url: CanonicalURL) -> PolicyDecision:
    """Policy's answer for a callback to `url` on behalf of `subject`; only `allow` permits it."""
    return snapshot.decide(subject, [callback_target(url)])


def require_callback_allowed(snapshot: PolicySnapshot, subject: Subject, callback_url: str) -> None:
    """At submission: refuse (422 naming `callback_url`) a callback policy does not allow."""
    url = parse_url(callback_url)
    decision = decide_callback(snapshot, subject, url)
    if decision.effect == "allow":
        return
    target = callback_target(url)
    why = (
        "a callback cannot wait for a human, so only `allow` permits one"
        if decision.effect == "approve"
        else decision.explain()
    )
    message = f"no policy rule allows callbacks to {url.wire} for {subject.principal} ({why})"
    raise ValidationFailed(
        [{"field": "callback_url", "message": message}],
        detail=f"No policy rule allows callbacks to this destination: act `{CALLBACK_ACT}` on {target.object} "
        f"is {decision.effect} for {subject.principal}.",
        hint=(
            "Leave out callback_url and poll GET /v1/actions/{id} (or send `Prefer: wait=N`), or use a "
            "callback URL your role is allowed. An operator allows one in the policy files with a rule "
            f"such as `p, role:<your role>, http:{url.authority}{_hooks_prefix(url.path)}, "
            f"{CALLBACK_ACT}, allow`."
        ),
    )


def _hooks_prefix(path: str) -> str:
    """The rule object a hint suggests: the URL's directory and below (`/hooks/**`)."""
    head = path.rsplit("/", 1)[0]
    return f"{head}/**" if head else "/**"


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
            & col(Action.status).in_([s.value for s in CALLED_BACK_STATUSES])
            & (col(Action.finished_at) >= utcnow() - _LOOKBACK)
            & ~already
        )
        .limit(limit)
    ).all()
    for action_id in due:
        enqueue(session, kind=delivery.KIND_CALLBACK, subject_id=action_id, coalesce_key=f"callback:{action_id}")
    return len(due)


def deliver_callback(runtime: Runtime, claimed: delivery.ClaimedDelivery) -> delivery.DeliveryResult:
    settings = runtime.settings
    if settings.callback_secret is None:
        return delivery.GiveUp("OUTBOX_CALLBACK_SECRET is not set: callbacks cannot be signed, so none is sent")
    with runtime.db.session() as session:
        action = session.get(Action, claimed.subject_id)
        agent = session.get(Agent, action.agent_id) if action is not None else None
    if action is None or action.callback_url is None:
        return delivery.GiveUp("the action or its callback URL no longer exists")
    url = _destination_now(runtime, action, agent)
    if isinstance(url, delivery.GiveUp):
        return url
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
        # The process's pooled client: connections reused per origin only, no cookies kept, no
        # redirects, nothing from the environment (outbox/http_clients.py).
        client = SHARED_CLIENTS.client(ClientSettings(timeout_seconds=settings.callback_timeout_seconds))
        reply = client.post(httpx.URL(url.wire), content=body, headers=headers)
    except httpx.HTTPError as exc:
        return delivery.RetryLater(f"POST {url.wire}: {type(exc).__name__}: {exc}")
    status = reply.status_code
    if 200 <= status < 300:
        return delivery.Delivered(f"HTTP {status}")
    if status in (408, 425, 429) or status >= 500:
        return delivery.RetryLater(f"HTTP {status}", retry_after=_retry_after(reply.headers.get("retry-after")))
    return delivery.GiveUp(f"the receiver refused the callback with HTTP {status}")


def _destination_now(runtime: Runtime, action: Action, agent: Agent | None) -> CanonicalURL | delivery.GiveUp:
    """The URL to POST to, or why no callback is sent: decided again against the policy in
    force now (a permission revoked since submission stops the callback), for the agent as it
    is now."""
    if action.status == ActionStatus.DENIED.value:
        return delivery.GiveUp("the call was denied by policy: a refused request is never called back")
    if agent is None or agent.revoked_at is not None:
        return delivery.GiveUp("the agent that asked for this callback is revoked: no callback is sent")
    try:
        url = parse_url(action.callback_url or "")
    except URLRefused as exc:
        return delivery.GiveUp(f"the callback URL is not acceptable: {exc}")
    snapshot = runtime.policy.current.snapshot
    caller = AuthenticatedAgent(agent.id, agent.name, tuple(agent.roles))
    decision = decide_callback(snapshot, Subject(caller.principal, caller.roles), url)
    if decision.effect != "allow":
        return delivery.GiveUp(
            f"policy {decision.policy_version} no longer allows this callback, so none is sent: {decision.explain()}"
        )
    return url


def _retry_after(value: str | None) -> float | None:
    """The receiver's Retry-After (either form), waited for at most an hour."""
    seconds = parse_retry_after(value, now=utcnow())
    return None if seconds is None else min(seconds, MAX_RETRY_AFTER_SECONDS)
