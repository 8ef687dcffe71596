"""Every SQL statement of the approval gates. Callers own the transaction (`Database.session()`)
and the rules: who may decide, what counts towards quorum, when a request expires."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from outbox.actions.models import Action
from outbox.approvals.models import ApprovalDecision, ApprovalRequest, ApprovalStatus


def insert(session: Session, row: ApprovalRequest | ApprovalDecision) -> None:
    """Insert the row now (flushed), so the reads and audit events that follow see it."""
    session.add(row)
    session.flush()


def save(session: Session, approval: ApprovalRequest, *, flush: bool = False) -> None:
    """Keep the changes made to a loaded request; they are written with the transaction, or at
    once with `flush`."""
    session.add(approval)
    if flush:
        session.flush()


def find(session: Session, ref: str, *, lock: bool = False) -> ApprovalRequest | None:
    """An approval by its id, or by the id of its action; `lock` holds its row for the rest of
    the transaction."""
    column = ApprovalRequest.action_id if ref.startswith("act_") else ApprovalRequest.id
    query = select(ApprovalRequest).where(col(column) == ref)
    if lock:
        query = query.with_for_update()
    return session.exec(query).first()


def decisions(session: Session, approval_id: str) -> list[ApprovalDecision]:
    return list(session.exec(select(ApprovalDecision).where(col(ApprovalDecision.approval_id) == approval_id)).all())


def action_of(session: Session, approval: ApprovalRequest) -> Action:
    action = session.get(Action, approval.action_id)
    assert action is not None  # an approval request is only ever opened for a recorded action
    return action


def newest(session: Session, *, status: str | None, limit: int) -> Sequence[ApprovalRequest]:
    query = select(ApprovalRequest)
    if status is not None:
        query = query.where(col(ApprovalRequest.status) == status)
    return session.exec(query.order_by(col(ApprovalRequest.created_at).desc()).limit(limit)).all()


def pending_due(session: Session, now: datetime, *, limit: int) -> Sequence[str]:
    """The ids of pending requests past their expiry at `now`."""
    return session.exec(
        select(ApprovalRequest.id)
        .where((col(ApprovalRequest.status) == ApprovalStatus.PENDING.value) & (col(ApprovalRequest.expires_at) <= now))
        .limit(limit)
    ).all()
