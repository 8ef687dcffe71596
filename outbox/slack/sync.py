"""Durable Slack calls: render an approval's message from the database and post or update it;
send ephemeral replies. A channel of the delivery queue (outbox/deliveries/).

The message is rendered from the current state at the moment of the call, so retries and
coalesced changes always show the latest truth, whatever order they were queued in.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import exists
from sqlmodel import Session, col, select

from outbox.actions.models import Action
from outbox.approvals.models import ApprovalRequest
from outbox.approvals.service import view
from outbox.deliveries import service as delivery
from outbox.deliveries.models import Delivery, DeliveryState
from outbox.slack.blocks import approval_message
from outbox.slack.client import SlackClient, SlackNotConfigured, SlackRefused, SlackUnavailable
from outbox.sqltypes import utcnow

if TYPE_CHECKING:
    from outbox.runtime import Runtime

# An ephemeral reply is an answer to a click; one that cannot be sent soon is not worth sending.
EPHEMERAL_MAX_AGE = timedelta(minutes=5)


def handle_slack_delivery(runtime: Runtime, claimed: delivery.ClaimedDelivery) -> delivery.DeliveryResult:
    try:
        client = SlackClient(runtime.settings)
        if claimed.kind == delivery.KIND_SLACK_MESSAGE:
            return _sync_message(runtime, client, claimed.subject_id)
        if claimed.kind == delivery.KIND_SLACK_EPHEMERAL:
            if utcnow() - claimed.created_at > EPHEMERAL_MAX_AGE:
                return delivery.GiveUp("the ephemeral reply is stale; the clicker has moved on")
            payload = claimed.payload
            client.post_ephemeral(channel=payload["channel"], user=payload["user"], text=payload["text"])
            return delivery.Delivered()
        return delivery.GiveUp(f"unknown Slack delivery {claimed.kind!r}")
    except SlackNotConfigured as exc:
        return delivery.GiveUp(str(exc))
    except SlackUnavailable as exc:
        return delivery.RetryLater(str(exc), retry_after=exc.retry_after)
    except SlackRefused as exc:
        return delivery.GiveUp(str(exc))


def _sync_message(runtime: Runtime, client: SlackClient, approval_id: str) -> delivery.DeliveryResult:
    with runtime.db.session() as session:
        approval = session.get(ApprovalRequest, approval_id)
        if approval is None or approval.slack_channel is None:
            return delivery.GiveUp("the approval has no Slack channel")
        shown = view(session, approval)
        channel, channel_id, ts = approval.slack_channel, approval.slack_channel_id, approval.slack_ts
    text, blocks = approval_message(shown)
    if ts is None:
        posted = client.post_message(channel=channel, text=text, blocks=blocks)
        with runtime.db.session() as session:
            _remember(session, approval_id, shown.action_status, channel_id=posted.channel_id, ts=posted.ts)
        return delivery.Delivered(f"posted {posted.ts}")
    client.update_message(channel=channel_id or channel, ts=ts, text=text, blocks=blocks)
    with runtime.db.session() as session:
        _remember(session, approval_id, shown.action_status)
    return delivery.Delivered(f"updated {ts}")


def _remember(
    session: Session, approval_id: str, status: str, *, channel_id: str | None = None, ts: str | None = None
) -> None:
    approval = session.exec(
        select(ApprovalRequest).where(col(ApprovalRequest.id) == approval_id).with_for_update()
    ).one()
    approval.slack_rendered_status = status
    if ts is not None:
        approval.slack_channel_id, approval.slack_ts = channel_id, ts
    session.add(approval)


def reconcile_messages(session: Session, *, limit: int = 200) -> int:
    """Queue an update for every Slack message that shows an older action status than the
    database (after execution, cancellation, expiry): the message ends showing the outcome.

    A message with a delivery still pending, or one that was given up after the action's last
    change, is left alone: the pending one will render the latest state, and retrying a call
    Slack refused for good would only be refused again.
    """
    handled = exists().where(
        (col(Delivery.kind) == delivery.KIND_SLACK_MESSAGE)
        & (col(Delivery.subject_id) == col(ApprovalRequest.id))
        & (
            (col(Delivery.state) == DeliveryState.PENDING.value)
            | ((col(Delivery.state) == DeliveryState.DEAD.value) & (col(Delivery.updated_at) >= col(Action.updated_at)))
        )
    )
    stale = session.exec(
        select(ApprovalRequest.id)
        .join(Action, col(Action.id) == col(ApprovalRequest.action_id))
        .where(
            col(ApprovalRequest.slack_ts).is_not(None)
            & (
                col(ApprovalRequest.slack_rendered_status).is_(None)
                | (col(ApprovalRequest.slack_rendered_status) != col(Action.status))
            )
            & (col(Action.updated_at) >= utcnow() - timedelta(days=2))
            & ~handled
        )
        .limit(limit)
    ).all()
    for approval_id in stale:
        delivery.enqueue(
            session,
            kind=delivery.KIND_SLACK_MESSAGE,
            subject_id=approval_id,
            coalesce_key=f"{delivery.KIND_SLACK_MESSAGE}:{approval_id}",
        )
    return len(stale)
