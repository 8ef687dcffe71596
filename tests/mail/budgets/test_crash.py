"""What happens when a worker dies between the relay's 250 and the record of it.

The outcome is unknown (RFC 1047's problem): the pipeline retries, so the recipient may get the
message twice, with the same Message-ID so that receivers and our records can tell. The budget
is not charged twice: the charge was made, with the recipient's row, before the send."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlmodel import col

from outbox.actions.models import Action
from outbox.budgets.service import used
from outbox.mail.budgets.db_gate import DatabaseMailGate
from outbox.mail.budgets.ledger import HOUR, hour_key
from outbox.sqltypes import utcnow
from tests.mail.world import SUBDOMAIN, MailWorld


def test_a_send_whose_result_was_not_recorded_is_retried_with_the_same_message_id_and_no_new_charge(
    world: MailWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.configure()
    record = DatabaseMailGate.record_results

    def die_once(*args: object, **kwargs: object) -> None:
        monkeypatch.setattr(DatabaseMailGate, "record_results", record)
        raise RuntimeError("worker died before recording")

    monkeypatch.setattr(DatabaseMailGate, "record_results", die_once)
    action_id, status = world.send()
    assert status == "queued"  # a retryable failure: the outcome is unknown
    with world.rt.db.session() as session:
        session.execute(update(Action).where(col(Action.id) == action_id).values(not_before=utcnow()))

    assert world.run(action_id) == "succeeded"

    ids = world.delivered_ids()
    assert len(ids) == 2 and ids[0] == ids[1]
    with world.rt.db.session() as session:
        assert used(session, hour_key(SUBDOMAIN), HOUR) == 1
