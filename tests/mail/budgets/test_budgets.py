"""Send budgets through the pipeline: every cap charged at once in the database, over a cap the
send is deferred to the moment the refusing window reopens (the cap named), never dropped; it
fails only when it can never fit or cannot go before its expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlmodel import col

from outbox.actions.models import Action
from outbox.budgets.service import used, window_start
from outbox.execution.sweeper import sweep_once
from outbox.mail.budgets.ledger import DAY, HOUR, agent_key, day_key, hour_key, recipient_cap_key, recipient_domain_key
from outbox.mail.models import MailDelivery
from outbox.mail.sending.sink import SinkScript
from outbox.sqltypes import utcnow
from tests.mail.world import SUBDOMAIN, MailWorld, message
from tests.support.agents import make_agent
from tests.support.calls import load, submit_call


def used_now(world: MailWorld, key: str, window: timedelta) -> int:
    with world.rt.db.session() as session:
        return used(session, key, window)


def next_window(window: timedelta) -> datetime:
    return window_start(utcnow(), window) + window


def tomorrow() -> datetime:
    return next_window(DAY)


def test_over_the_hourly_cap_a_send_is_deferred_to_the_next_hour_and_names_the_cap(world: MailWorld) -> None:
    world.configure(budgets={"per_hour": 2, "per_day": 100})
    assert [world.send(message(f"r{n}@example.net"))[1] for n in range(2)] == ["succeeded", "succeeded"]

    action_id, status = world.send(message("r3@example.net"))

    assert status == "deferred"
    action = load(world.rt, action_id)
    assert action.not_before == next_window(HOUR)
    assert action.status_reason is not None
    assert f"the hourly cap of {SUBDOMAIN} (2 per hour) is used up" in action.status_reason
    assert action.attempts == 0  # waiting for a window is not an attempt
    assert len(world.sink.messages()) == 2
    assert used_now(world, hour_key(SUBDOMAIN), HOUR) == 2
    assert used_now(world, day_key(SUBDOMAIN), DAY) == 2


def test_a_deferred_send_comes_back_when_due_and_waits_again_while_the_window_is_full(world: MailWorld) -> None:
    world.configure(budgets={"per_hour": 1, "per_day": 100})
    world.send(message("first@example.net"))
    action_id, status = world.send(message("second@example.net"))
    assert status == "deferred"
    with world.rt.db.session() as session:  # pretend the window reopened
        session.execute(
            update(Action).where(col(Action.id) == action_id).values(not_before=utcnow() - timedelta(seconds=1))
        )

    sweep_once(world.rt)
    assert world.status(action_id) == "queued"
    assert world.run(action_id) == "deferred"  # the hour is still full: it waits again, not lost
    assert len(world.sink.messages()) == 1


def test_a_recipient_domain_cap_holds_back_only_that_domain(world: MailWorld) -> None:
    world.allow_recipients_at("gmail.com")
    world.configure(recipient_domain_hourly={"gmail.com": 1})
    assert world.send(message("a@gmail.com"))[1] == "succeeded"

    held, held_status = world.send(message("b@gmail.com"))
    other = world.send(message("c@example.net"))[1]

    assert (held_status, other) == ("deferred", "succeeded")
    reason = load(world.rt, held).status_reason or ""
    assert "the hourly cap for recipients at gmail.com (1 per hour)" in reason
    assert used_now(world, recipient_domain_key(SUBDOMAIN, "gmail.com"), HOUR) == 1


def test_a_recipient_gets_at_most_their_daily_cap_and_then_waits_for_tomorrow(world: MailWorld) -> None:
    world.configure(per_recipient_daily=1)
    assert world.send(message("ann@example.net"))[1] == "succeeded"

    again, status = world.send(message("ann@example.net", subject="And another thing"))

    assert status == "deferred"
    action = load(world.rt, again)
    assert action.not_before == tomorrow()
    assert "daily cap per recipient (ann@example.net)" in (action.status_reason or "")
    assert used_now(world, recipient_cap_key(SUBDOMAIN, "ann@example.net"), DAY) == 1


def test_an_agent_over_its_daily_cap_waits_while_other_agents_still_send(world: MailWorld) -> None:
    world.configure(per_agent_daily=2)
    other_key = make_agent(world.rt.db, "other-bot", ["mailer"])
    for n in range(2):
        world.send(message(f"r{n}@example.net"))

    held, status = world.send(message("r2@example.net"))
    other = submit_call(world.rt, other_key, "email.send", message("r3@example.net"))

    assert status == "deferred"
    assert "the daily cap of agent mailer-bot (2 per day)" in (load(world.rt, held).status_reason or "")
    assert world.run(other) == "succeeded"
    assert used_now(world, agent_key(SUBDOMAIN, "mailer-bot"), DAY) == 2
    assert used_now(world, agent_key(SUBDOMAIN, "other-bot"), DAY) == 1


def test_warm_up_caps_the_day_below_the_full_budget_and_grows_tomorrow(world: MailWorld) -> None:
    today = utcnow().date()
    world.configure(warm_up={"start_date": today.isoformat(), "initial_daily_cap": 2, "daily_growth_factor": 2.0})
    for n in range(2):
        world.send(message(f"r{n}@example.net"))

    held, status = world.send(message("r2@example.net"))
    big, big_status = world.send(message([f"m{n}@example.net" for n in range(3)]))

    assert status == "deferred"
    action = load(world.rt, held)
    assert action.not_before == tomorrow()
    assert f"the warm-up daily cap of {SUBDOMAIN} (day 1 of its ramp) (2 per day)" in (action.status_reason or "")
    # Three recipients never fit today's cap of 2; tomorrow's is 4: it waits for tomorrow.
    assert big_status == "deferred"
    assert load(world.rt, big).not_before == tomorrow()
    assert "the ramp allows it from" in (load(world.rt, big).status_reason or "")


def test_before_the_warm_up_start_date_nothing_is_sent(world: MailWorld) -> None:
    start = utcnow().date() + timedelta(days=2)
    world.configure(warm_up={"start_date": start.isoformat(), "initial_daily_cap": 5, "daily_growth_factor": 1.5})

    action_id, status = world.send()

    assert status == "deferred"
    assert load(world.rt, action_id).not_before == datetime.combine(start, datetime.min.time(), tzinfo=UTC)
    assert world.sink.messages() == []


def test_a_message_with_more_recipients_than_a_cap_fails_instead_of_waiting_forever(world: MailWorld) -> None:
    world.configure(budgets={"per_hour": 2, "per_day": 100})

    action_id, status = world.send(message([f"r{n}@example.net" for n in range(3)]))

    assert status == "failed"
    assert "it can never fit; split it" in (load(world.rt, action_id).status_reason or "")
    assert used_now(world, hour_key(SUBDOMAIN), HOUR) == 0


def test_recipients_are_the_unit_and_a_send_is_charged_all_or_nothing(world: MailWorld) -> None:
    world.configure(budgets={"per_hour": 4, "per_day": 100})
    assert world.send(message([f"r{n}@example.net" for n in range(3)]))[1] == "succeeded"

    _, status = world.send(message(["x@example.net", "y@example.net"]))

    assert status == "deferred"  # needs 2 units, 1 left: nothing charged, nothing sent
    assert used_now(world, hour_key(SUBDOMAIN), HOUR) == 3
    assert len(world.sink.messages()) == 1


def test_a_send_that_cannot_go_before_its_expiry_fails_with_its_reason(world: MailWorld) -> None:
    world.configure(budgets={"per_hour": 1, "per_day": 100}, settings={"mail_max_deferral_hours": 0.001})
    world.send(message("first@example.net"))

    action_id, status = world.send(message("second@example.net"))

    assert status == "failed"
    reason = load(world.rt, action_id).status_reason or ""
    assert f"the hourly cap of {SUBDOMAIN} (1 per hour) is used up" in reason
    assert "after its expiry" in reason
    assert len(world.sink.messages()) == 1


def test_a_recipient_is_charged_once_however_many_attempts_it_takes(world: MailWorld) -> None:
    world.configure(budgets={"per_hour": 5, "per_day": 100})
    world.sink.set_script(SinkScript(rcpt={"ann@example.net": 451}))
    action_id, status = world.send(message(["ann@example.net", "bob@example.net"]))
    assert status == "queued"  # bob delivered, ann got a 4xx: the action retries for ann only
    assert used_now(world, hour_key(SUBDOMAIN), HOUR) == 2

    world.sink.set_script(SinkScript())
    with world.rt.db.session() as session:
        session.execute(update(Action).where(col(Action.id) == action_id).values(not_before=utcnow()))
    assert world.run(action_id) == "succeeded"

    assert used_now(world, hour_key(SUBDOMAIN), HOUR) == 2
    deliveries = [m.recipients for m in world.sink.messages()]
    assert deliveries == [("bob@example.net",), ("ann@example.net",)]
    with world.rt.db.session() as session:
        ann = session.get(MailDelivery, (action_id, "ann@example.net"))
    assert ann is not None and (ann.outcome, ann.attempts) == ("delivered", 2)


def test_budget_state_survives_a_new_runtime(world: MailWorld) -> None:
    world.configure(budgets={"per_hour": 1, "per_day": 100})
    assert world.send(message("first@example.net"))[1] == "succeeded"
    world.rt.db.dispose()

    world.runtime = world.build_runtime()  # a restarted process: new engine, new policy load
    action_id, status = world.send(message("second@example.net"))

    assert status == "deferred"
    assert "(1 per hour) is used up" in (load(world.rt, action_id).status_reason or "")
    assert len(world.sink.messages()) == 1


def _window_opening_tomorrow() -> dict[str, object]:
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[(utcnow().weekday() + 1) % 7]
    return {"days": [day], "start": "00:00", "end": "24:00", "timezone": "UTC"}


def test_mail_outside_the_send_window_is_deferred_to_its_opening_and_charged_nothing(world: MailWorld) -> None:
    world.configure(send_window=_window_opening_tomorrow())

    action_id, status = world.send()

    assert status == "deferred"
    action = load(world.rt, action_id)
    assert action.not_before == tomorrow()
    assert f"outside the send window of {SUBDOMAIN} (in UTC)" in (action.status_reason or "")
    assert used_now(world, hour_key(SUBDOMAIN), HOUR) == 0


def test_mail_whose_window_opens_after_its_expiry_fails_now(world: MailWorld) -> None:
    world.configure(send_window=_window_opening_tomorrow(), settings={"mail_max_deferral_hours": 0.01})

    action_id, status = world.send()

    assert status == "failed"
    assert "outside the send window" in (load(world.rt, action_id).status_reason or "")
