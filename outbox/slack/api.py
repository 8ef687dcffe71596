"""`POST /slack/interactions`: button clicks and modal submissions from Slack.

Order matters, as in Slack's own guidance and Netflix Dispatch's middleware:
1. The signature (`X-Slack-Signature` over `v0:<timestamp>:<raw body>` with the signing secret)
   and the timestamp (within five minutes) are checked on the raw body before anything else is
   read; failure is 401. A signature seen before is a replay and is refused too.
2. The Slack user becomes an identity, `slack:<user id>`; from then on Slack is just another
   channel into the approvals service, which applies the approver policy.
3. Slack wants an answer within three seconds. The decision itself is one short transaction;
   every call back to Slack (chat.update, ephemeral replies, views.open) happens after the
   answer, as a background task, and the message updates are durable deliveries.

Idempotency: the same click delivered twice (`X-Slack-Retry-Num`, double clicks) is recognised
by its action timestamp, and a second decision by the same approver is counted once anyway.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import structlog
from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse, Response
from slack_sdk.signature import SignatureVerifier
from starlette.concurrency import run_in_threadpool

from outbox.api.deps import RuntimeDep
from outbox.approvals.authority import ApprovalRefused
from outbox.approvals.service import check_may_decide, decide
from outbox.canonical import JSONInputError, loads_strict
from outbox.db import insert_or_ignore
from outbox.deliveries import service as delivery
from outbox.identities import InvalidIdentity, parse_principal
from outbox.problems import Problem
from outbox.slack.blocks import APPROVE_ACTION, DENY_ACTION, DENY_MODAL, REASON_BLOCK, RESUBMIT_BLOCK, deny_modal
from outbox.slack.client import SlackClient, SlackNotConfigured, SlackRefused, SlackUnavailable
from outbox.slack.models import SlackSeenRequest

if TYPE_CHECKING:
    from outbox.runtime import Runtime

log = structlog.get_logger(__name__)

router = APIRouter(tags=["slack"])

MAX_BODY_BYTES = 1_048_576
_USER_ID = re.compile(r"^[A-Z0-9]{2,32}$")


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "invalid-slack-signature",
        "Invalid Slack signature",
        detail,
        hint="Requests to this endpoint must come from Slack, signed with the app's signing secret.",
    )


def _bad_payload(detail: str) -> Problem:
    return Problem(400, "invalid-slack-payload", "Invalid Slack payload", detail)


async def _read_raw(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Problem(413, "request-too-large", "Request body too large", "Slack payloads are smaller than this.")
        chunks.append(chunk)
    return b"".join(chunks)


def signature_valid(secret: str, raw: bytes, timestamp: str | None, signature: str | None) -> bool:
    """slack_sdk's verifier: HMAC-SHA256 over `v0:<ts>:<body>`, ts within five minutes."""
    try:
        return SignatureVerifier(secret).is_valid(raw, timestamp, signature)
    except (ValueError, UnicodeDecodeError, OverflowError):
        return False


def remember(runtime: Runtime, key: str) -> bool:
    """Record a key; False if it was already recorded (by any replica: the database decides)."""
    with runtime.db.session() as session:
        return insert_or_ignore(session, SlackSeenRequest, [SlackSeenRequest(key=key).model_dump()]) == 1


def slack_identity(payload: dict[str, Any]) -> tuple[str, str]:
    """The one place a Slack user becomes an outbox identity: `slack:<user id>`, parsed by the
    same parser as every other identity authority depends on, so it is compared canonically."""
    user = payload.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    if not isinstance(user_id, str) or not _USER_ID.match(user_id):
        raise _bad_payload("the payload names no valid Slack user")
    try:
        identity = parse_principal(f"slack:{user_id}")
    except InvalidIdentity as exc:
        raise _bad_payload("the payload names no valid Slack user") from exc
    return identity.canonical, user_id


@router.post(
    "/slack/interactions",
    summary="Slack interactivity (signed by Slack)",
    responses={401: {"description": "Bad, stale or replayed signature"}},
)
async def slack_interactions(request: Request, runtime: RuntimeDep, background: BackgroundTasks) -> Response:
    secret = runtime.settings.slack_signing_secret
    if secret is None:
        raise Problem(
            503,
            "slack-disabled",
            "Slack is not configured",
            "OUTBOX_SLACK_SIGNING_SECRET is not set on this server.",
            hint="Approve through `outbox approvals` or the admin API instead.",
        )
    raw = await _read_raw(request)
    signature = request.headers.get("x-slack-signature")
    if not signature_valid(secret.get_secret_value(), raw, request.headers.get("x-slack-request-timestamp"), signature):
        raise _unauthorized("The request signature is missing, wrong, or older than five minutes.")
    assert signature is not None
    fresh = await run_in_threadpool(remember, runtime, "sig:" + hashlib.sha256(signature.encode()).hexdigest())
    if not fresh:
        if request.headers.get("x-slack-retry-num"):
            return Response(status_code=200)  # Slack retrying a request we already handled
        raise _unauthorized("This signed request was already received: replays are refused.")
    payload = _parse(raw)
    kind = payload.get("type")
    if kind == "block_actions":
        return await run_in_threadpool(_on_block_action, runtime, payload, background)
    if kind == "view_submission":
        return await run_in_threadpool(_on_view_submission, runtime, payload, background)
    return Response(status_code=200)


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        form = parse_qs(raw.decode("utf-8"), strict_parsing=False)
        # The same strict JSON rules as every other body (no NaN, no 5000-digit integers).
        payload = loads_strict(form["payload"][0])
    except (UnicodeDecodeError, KeyError, IndexError) as exc:
        raise _bad_payload("expected a form body with a JSON `payload` field") from exc
    except JSONInputError as exc:
        raise _bad_payload(f"the `payload` field is not JSON this server accepts: {exc}") from exc
    if not isinstance(payload, dict):
        raise _bad_payload("the payload is not a JSON object")
    return payload


def _ephemeral(runtime: Runtime, channel: str | None, user_id: str, text: str) -> list[str]:
    """Queue a reply only the clicker sees; returns the delivery ids to attempt now."""
    if channel is None:
        return []
    with runtime.db.session() as session:
        created = delivery.enqueue(
            session,
            kind=delivery.KIND_SLACK_EPHEMERAL,
            subject_id=user_id,
            payload={"channel": channel, "user": user_id, "text": text},
        )
    return [created] if created else []


def _refused(runtime: Runtime, channel: str | None, user_id: str, refusal: ApprovalRefused) -> list[str]:
    return _ephemeral(runtime, channel, user_id, f":no_entry: {refusal.message}. Nothing changed.")


def _deliver_now(runtime: Runtime, ids: list[str]) -> None:
    delivery.deliver_due(runtime, ids=ids)


def _on_block_action(runtime: Runtime, payload: dict[str, Any], background: BackgroundTasks) -> Response:
    identity, user_id = slack_identity(payload)
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise _bad_payload("block_actions without an action")
    clicked = actions[0]
    action_id, value = clicked.get("action_id"), clicked.get("value")
    if action_id not in (APPROVE_ACTION, DENY_ACTION) or not isinstance(value, str):
        return Response(status_code=200)
    approval_id, _, digest = value.partition(":")
    channel = (payload.get("channel") or {}).get("id") or (payload.get("container") or {}).get("channel_id")
    click = f"{user_id}|{clicked.get('action_ts')}|{action_id}|{value}"
    if not remember(runtime, "click:" + hashlib.sha256(click.encode()).hexdigest()):
        return Response(status_code=200)  # the same click again (a Slack retry)

    if action_id == APPROVE_ACTION:
        try:
            result = decide(runtime, approval_id, identity, "approve", via="slack", digest=digest or None)
        except ApprovalRefused as refusal:
            background.add_task(_deliver_now, runtime, _refused(runtime, channel, user_id, refusal))
            return Response(status_code=200)
        ids = list(result.deliveries)
        if result.outcome in ("recorded", "duplicate"):
            ids += _ephemeral(runtime, channel, user_id, result.message)
        background.add_task(_deliver_now, runtime, ids)
        return Response(status_code=200)

    try:
        shown = check_may_decide(runtime, approval_id, identity, "deny", digest or None)
    except ApprovalRefused as refusal:
        background.add_task(_deliver_now, runtime, _refused(runtime, channel, user_id, refusal))
        return Response(status_code=200)
    trigger_id = payload.get("trigger_id")
    if isinstance(trigger_id, str):
        background.add_task(
            _open_deny_modal,
            runtime,
            trigger_id,
            approval_id=shown.id,
            digest=shown.digest,
            tool=shown.tool,
            channel=channel,
            user_id=user_id,
        )
    return Response(status_code=200)


def _open_deny_modal(
    runtime: Runtime,
    trigger_id: str,
    *,
    approval_id: str,
    digest: str,
    tool: str,
    channel: str | None,
    user_id: str,
) -> None:
    """views.open must use the trigger within three seconds, so it is not queued: if it fails,
    the clicker is told how to deny another way."""
    try:
        SlackClient(runtime.settings).open_view(
            trigger_id=trigger_id, view=deny_modal(approval_id=approval_id, digest=digest, tool=tool)
        )
    except (SlackUnavailable, SlackRefused, SlackNotConfigured) as exc:
        log.warning("slack.views_open_failed", approval_id=approval_id, error=str(exc))
        ids = _ephemeral(
            runtime,
            channel,
            user_id,
            f"Could not open the denial form ({exc}). Deny with "
            f'`outbox approvals deny {approval_id} --as slack:{user_id} --reason "…"`.',
        )
        _deliver_now(runtime, ids)


def _on_view_submission(runtime: Runtime, payload: dict[str, Any], background: BackgroundTasks) -> Response:
    identity, _user_id = slack_identity(payload)
    view = payload.get("view")
    if not isinstance(view, dict) or view.get("callback_id") != DENY_MODAL:
        return Response(status_code=200)
    try:
        meta = loads_strict(view.get("private_metadata") or "{}")
        values = view["state"]["values"]
        reason = values[REASON_BLOCK][REASON_BLOCK].get("value")
        selected = ((values.get(RESUBMIT_BLOCK) or {}).get(RESUBMIT_BLOCK) or {}).get("selected_options") or []
        approval_id, digest = str(meta["approval_id"]), str(meta["digest"])
    except (KeyError, TypeError, AttributeError, JSONInputError) as exc:
        raise _bad_payload("the denial form is incomplete") from exc
    may_resubmit = any(isinstance(o, dict) and o.get("value") == "yes" for o in selected)
    try:
        result = decide(
            runtime,
            approval_id,
            identity,
            "deny",
            via="slack",
            reason=str(reason or "").strip() or None,
            may_resubmit=may_resubmit,
            digest=digest,
        )
    except ApprovalRefused as refusal:
        # Shown inline in the modal, which stays open; nothing changed.
        return JSONResponse({"response_action": "errors", "errors": {REASON_BLOCK: refusal.message[:150]}})
    background.add_task(_deliver_now, runtime, list(result.deliveries))
    return Response(status_code=200)
