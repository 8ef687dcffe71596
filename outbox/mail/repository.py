"""Every SQL query of the mail ledger. Callers own the transaction (`Database.session()`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, or_, update
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from outbox.budgets.models import BudgetCounter
from outbox.db import insert_or_ignore, inserted_rows
from outbox.mail.addresses import recipient_key
from outbox.mail.models import (
    EVERY_SUBDOMAIN,
    DeliveryOutcome,
    MailDelivery,
    MailFeedbackEvent,
    MailPause,
    MailSubdomainState,
    MailSuppression,
    PauseScope,
)

# --- Deliveries ----------------------------------------------------------------------------


def deliveries_of(session: Session, action_id: str) -> dict[str, MailDelivery]:
    rows = session.exec(select(MailDelivery).where(col(MailDelivery.action_id) == action_id)).all()
    return {row.recipient: row for row in rows}


def deliveries_by_message_id(session: Session, message_id: str) -> list[MailDelivery]:
    """Every recipient row of the message (deliveries keep the recipient as it was written)."""
    query = select(MailDelivery).where(col(MailDelivery.message_id) == message_id)
    return list(session.exec(query.order_by(col(MailDelivery.recipient))).all())


def upsert_delivery_result(
    session: Session,
    row: MailDelivery,
    *,
    outcome: DeliveryOutcome,
    code: int | None,
    message: str,
    stage: str,
    at: datetime,
) -> None:
    """Record one attempt's answer for a recipient; the row exists unless it was never charged."""
    values = {"outcome": outcome.value, "code": code, "message": message, "stage": stage, "at": at}
    moved = session.execute(
        update(MailDelivery)
        .where(and_(col(MailDelivery.action_id) == row.action_id, col(MailDelivery.recipient) == row.recipient))
        .values(attempts=col(MailDelivery.attempts) + 1, **values)
    )
    if moved.rowcount == 0:  # type: ignore[attr-defined]
        insert_or_ignore(
            session,
            MailDelivery,
            [
                {
                    "action_id": row.action_id,
                    "recipient": row.recipient,
                    "subdomain": row.subdomain,
                    "agent_name": row.agent_name,
                    "message_id": row.message_id,
                    "charged_at": None,
                    "attempts": 1,
                    **values,
                }
            ],
        )


# --- The send path (built once: every email.send attempt runs these) --------------------------
#
# Core statements on the session's connection, without the ORM: the mail gate runs them for every
# message. Bound parameters are named apart from the columns, which an UPDATE or INSERT reserves
# for its SET and VALUES.

_DELIVERY = MailDelivery.__table__  # type: ignore[attr-defined]
_PAUSE = MailPause.__table__  # type: ignore[attr-defined]
_SUPPRESSION = MailSuppression.__table__  # type: ignore[attr-defined]
_STATE = MailSubdomainState.__table__  # type: ignore[attr-defined]

_DELIVERY_ANSWERS = core_select(
    _DELIVERY.c.recipient, _DELIVERY.c.outcome, _DELIVERY.c.code, _DELIVERY.c.message, _DELIVERY.c.stage
).where(_DELIVERY.c.action_id == bindparam("of_action"))

_PAUSES_STOPPING = core_select(_PAUSE).where(
    or_(
        _PAUSE.c.scope == PauseScope.ALL.value,
        and_(_PAUSE.c.scope == PauseScope.SUBDOMAIN.value, _PAUSE.c.target == bindparam("of_subdomain")),
        and_(_PAUSE.c.scope == PauseScope.AGENT.value, _PAUSE.c.target == bindparam("of_agent")),
    )
)

_DNS_STATE = core_select(_STATE.c.dns_ok, _STATE.c.dns_reason, _STATE.c.dns_checked_at).where(
    _STATE.c.subdomain == bindparam("of_subdomain")
)

_SUPPRESSIONS_AMONG = core_select(
    _SUPPRESSION.c.recipient, _SUPPRESSION.c.scope, _SUPPRESSION.c.reason, _SUPPRESSION.c.created_at
).where(
    _SUPPRESSION.c.recipient.in_(bindparam("keys", expanding=True)),
    _SUPPRESSION.c.scope.in_([EVERY_SUBDOMAIN, bindparam("of_subdomain")]),
)

_RECORD_ANSWER = (
    update(_DELIVERY)
    .where(and_(_DELIVERY.c.action_id == bindparam("of_action"), _DELIVERY.c.recipient == bindparam("of_recipient")))
    .values(
        attempts=_DELIVERY.c.attempts + 1,
        outcome=bindparam("new_outcome"),
        code=bindparam("new_code"),
        message=bindparam("new_message"),
        stage=bindparam("new_stage"),
        at=bindparam("new_at"),
    )
)


def delivery_answers(connection: Connection, action_id: str) -> list[Any]:
    """(recipient, outcome, code, message, stage) of every recipient row of the action."""
    return list(connection.execute(_DELIVERY_ANSWERS, {"of_action": action_id}).all())


def pause_rows_stopping(session: Session, subdomain: str, agent_name: str) -> list[MailPause]:
    """`pauses_stopping` as one prebuilt statement (the send path asks it for every message)."""
    rows = session.connection().execute(_PAUSES_STOPPING, {"of_subdomain": subdomain, "of_agent": agent_name})
    return [MailPause(**row._mapping) for row in rows]


def dns_state_row(session: Session, subdomain: str) -> Any | None:
    """(dns_ok, dns_reason, dns_checked_at) of the subdomain, None if it has no state row."""
    return session.connection().execute(_DNS_STATE, {"of_subdomain": subdomain}).first()


def suppression_rows_among(session: Session, recipients: Iterable[str], subdomain: str) -> dict[str, Any]:
    """`suppressions_among` as one prebuilt statement: (recipient, scope, reason, created_at)
    of the suppression stopping each recipient, keyed by the recipient as given."""
    by_key: dict[str, list[str]] = {}
    for recipient in recipients:
        by_key.setdefault(recipient_key(recipient), []).append(recipient)
    if not by_key:
        return {}
    rows = session.connection().execute(_SUPPRESSIONS_AMONG, {"keys": list(by_key), "of_subdomain": subdomain})
    found: dict[str, Any] = {}
    for row in rows:
        for recipient in by_key[row.recipient]:
            found.setdefault(recipient, row)
    return found


def insert_new_deliveries(session: Session, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert the recipient rows the action does not have yet; return those recipients.

    One statement does what a read of the existing rows and an insert did: the rows it returns
    are exactly the recipients without one, which are the ones to charge.
    """
    return {row.recipient for row in inserted_rows(session, MailDelivery, rows, returning=("recipient",))}


def record_answers(session: Session, rows: Sequence[dict[str, Any]], at: datetime) -> None:
    """Record one attempt's answer for each recipient row (keys of `MailDelivery`, `outcome`,
    `code`, `message`, `stage`): one prebuilt UPDATE for all of them, and an insert only for
    recipients that have no row (never charged: suppressed)."""
    if not rows:
        return
    connection = session.connection()
    params = [
        {
            "of_action": row["action_id"],
            "of_recipient": row["recipient"],
            "new_outcome": row["outcome"],
            "new_code": row["code"],
            "new_message": row["message"],
            "new_stage": row["stage"],
            "new_at": at,
        }
        for row in rows
    ]
    moved = connection.execute(_RECORD_ANSWER, params[0] if len(params) == 1 else params)
    counted = len(params) == 1 or connection.dialect.supports_sane_multi_rowcount
    if counted and moved.rowcount == len(params):
        return
    # Some row is missing (or the driver cannot say): the rows just updated conflict and are
    # skipped, the missing ones are inserted as a first attempt.
    insert_or_ignore(session, MailDelivery, [{**row, "charged_at": None, "attempts": 1, "at": at} for row in rows])


def delivery_counts(session: Session, subdomain: str, since: datetime) -> dict[str, int]:
    """Recipients by outcome whose last answer came after `since`."""
    rows = session.execute(
        select(MailDelivery.outcome, func.count())
        .where(and_(col(MailDelivery.subdomain) == subdomain, col(MailDelivery.at) >= since))
        .group_by(col(MailDelivery.outcome))
    ).all()
    return {str(outcome): int(count) for outcome, count in rows}


# --- Suppressions --------------------------------------------------------------------------


# Suppressions are kept and matched by recipient key (`outbox.mail.addresses.recipient_key`):
# a bounce that reports `Ann@` for a message sent to `ann@` is about the same mailbox, and
# suppressing too much is the safe mistake. Callers pass keys where a function says `key`.


def suppressions_among(session: Session, recipients: Iterable[str], subdomain: str) -> dict[str, MailSuppression]:
    """The suppressions that stop any of `recipients` (addresses as written) from receiving mail
    from `subdomain`, keyed by the recipient as given."""
    by_key: dict[str, list[str]] = {}
    for recipient in recipients:
        by_key.setdefault(recipient_key(recipient), []).append(recipient)
    if not by_key:
        return {}
    rows = session.exec(
        select(MailSuppression).where(
            col(MailSuppression.recipient).in_(list(by_key)),
            col(MailSuppression.scope).in_([EVERY_SUBDOMAIN, subdomain]),
        )
    ).all()
    found: dict[str, MailSuppression] = {}
    for row in rows:
        for recipient in by_key[row.recipient]:
            found.setdefault(recipient, row)
    return found


def add_suppression(session: Session, suppression: MailSuppression) -> bool:
    """Insert the suppression, its recipient stored as its key; False if it was there."""
    row = {**suppression.model_dump(), "recipient": recipient_key(suppression.recipient)}
    return insert_or_ignore(session, MailSuppression, [row]) == 1


def remove_suppression(session: Session, key: str, scope: str | None) -> list[MailSuppression]:
    """Delete the mailbox's suppression for `scope`, or every one of them when scope is None."""
    query = select(MailSuppression).where(col(MailSuppression.recipient) == key)
    if scope is not None:
        query = query.where(col(MailSuppression.scope) == scope)
    rows = list(session.exec(query).all())
    for row in rows:
        session.delete(row)
    return rows


def list_suppressions(
    session: Session,
    *,
    key: str | None = None,
    scope: str | None = None,
    reason: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[MailSuppression]:
    query = select(MailSuppression)
    if key is not None:
        query = query.where(col(MailSuppression.recipient) == key)
    if scope is not None:
        query = query.where(col(MailSuppression.scope) == scope)
    if reason is not None:
        query = query.where(col(MailSuppression.reason) == reason)
    query = query.order_by(col(MailSuppression.created_at).desc(), col(MailSuppression.recipient))
    return list(session.exec(query.offset(offset).limit(limit)).all())


def suppression_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(MailSuppression.reason, func.count()).group_by(col(MailSuppression.reason))).all()
    return {str(reason): int(count) for reason, count in rows}


# --- Pauses --------------------------------------------------------------------------------


def pauses_stopping(session: Session, subdomain: str, agent_name: str) -> list[MailPause]:
    """The pauses that hold back mail from `agent_name` through `subdomain`."""
    return list(
        session.exec(
            select(MailPause).where(
                or_(
                    col(MailPause.scope) == PauseScope.ALL.value,
                    and_(col(MailPause.scope) == PauseScope.SUBDOMAIN.value, col(MailPause.target) == subdomain),
                    and_(col(MailPause.scope) == PauseScope.AGENT.value, col(MailPause.target) == agent_name),
                )
            )
        ).all()
    )


def add_pause(session: Session, pause: MailPause) -> bool:
    return insert_or_ignore(session, MailPause, [pause.model_dump()]) == 1


def remove_pause(session: Session, scope: PauseScope, target: str) -> MailPause | None:
    row = session.get(MailPause, (scope.value, target))
    if row is not None:
        session.execute(
            delete(MailPause).where(and_(col(MailPause.scope) == scope.value, col(MailPause.target) == target))
        )
    return row


def list_pauses(session: Session) -> list[MailPause]:
    return list(session.exec(select(MailPause).order_by(col(MailPause.scope), col(MailPause.target))).all())


# --- Feedback ------------------------------------------------------------------------------


def add_feedback_event(session: Session, event: MailFeedbackEvent) -> bool:
    """Store the event unless its id was seen before (providers redeliver webhooks)."""
    return insert_or_ignore(session, MailFeedbackEvent, [event.model_dump()]) == 1


def feedback_counts(session: Session, subdomain: str, since: datetime) -> dict[str, int]:
    rows = session.execute(
        select(MailFeedbackEvent.kind, func.count())
        .where(and_(col(MailFeedbackEvent.subdomain) == subdomain, col(MailFeedbackEvent.received_at) >= since))
        .group_by(col(MailFeedbackEvent.kind))
    ).all()
    return {str(kind): int(count) for kind, count in rows}


# --- Subdomain state -----------------------------------------------------------------------


def ensure_states(session: Session, subdomains: Iterable[str]) -> None:
    insert_or_ignore(session, MailSubdomainState, [{"subdomain": s} for s in subdomains])


def subdomain_state(session: Session, subdomain: str) -> MailSubdomainState | None:
    return session.get(MailSubdomainState, subdomain)


def subdomain_states(session: Session) -> dict[str, MailSubdomainState]:
    return {row.subdomain: row for row in session.exec(select(MailSubdomainState)).all()}


def claim_dns_check(session: Session, subdomain: str, now: datetime, interval: timedelta) -> bool:
    """Take the periodic DNS check of `subdomain` unless another process took it within
    `interval`; the conditional update makes exactly one process win."""
    ensure_states(session, [subdomain])
    result = session.execute(
        update(MailSubdomainState)
        .where(
            and_(
                col(MailSubdomainState.subdomain) == subdomain,
                or_(
                    col(MailSubdomainState.dns_claimed_at).is_(None),
                    col(MailSubdomainState.dns_claimed_at) <= now - interval,
                ),
            )
        )
        .values(dns_claimed_at=now)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def dns_checks_due(session: Session, subdomains: Sequence[str], now: datetime, interval: timedelta) -> bool:
    """Whether any subdomain has no check, or none claimed within `interval` (cheap, no lock)."""
    states = {
        row.subdomain: row
        for row in session.exec(
            select(MailSubdomainState).where(col(MailSubdomainState.subdomain).in_(list(subdomains)))
        ).all()
    }
    for subdomain in subdomains:
        state = states.get(subdomain)
        if state is None or state.dns_claimed_at is None or state.dns_claimed_at <= now - interval:
            return True
    return False


def store_dns_verdict(
    session: Session, subdomain: str, *, ok: bool, reason: str, report: dict[str, Any], checked_at: datetime
) -> bool | None:
    """Store a check's result; return the verdict it replaces (None: never checked)."""
    ensure_states(session, [subdomain])
    state = session.get(MailSubdomainState, subdomain, with_for_update=True)
    assert state is not None
    previous = state.dns_ok
    session.execute(
        update(MailSubdomainState)
        .where(col(MailSubdomainState.subdomain) == subdomain)
        .values(dns_ok=ok, dns_reason=reason, dns_report=report, dns_checked_at=checked_at)
    )
    return previous


def reset_breaker(session: Session, subdomain: str, since: datetime) -> None:
    ensure_states(session, [subdomain])
    session.execute(
        update(MailSubdomainState).where(col(MailSubdomainState.subdomain) == subdomain).values(breaker_since=since)
    )


# --- Budget counters (read-only; outbox.budgets owns and charges them) -----------------------


def counters_with_prefix(session: Session, prefix: str, window_start: datetime) -> dict[str, int]:
    """Units used in one window by every counter whose key starts with `prefix`, for status
    output (which agents and recipient domains have used a cap this window)."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    rows = session.execute(
        select(BudgetCounter.key, BudgetCounter.used).where(
            col(BudgetCounter.key).like(escaped + "%", escape="\\"),
            col(BudgetCounter.window_start) == window_start,
        )
    ).all()
    return {str(key): int(value) for key, value in rows}
