"""Embedded backpressure: a submission's answer waits while the worker threads are further behind
than the bound, so accepting never outruns executing; the sweeper never waits."""

from __future__ import annotations

import threading

from workers.embedded import EmbeddedDispatcher


def _publish_in_thread(dispatcher: EmbeddedDispatcher, action_id: str) -> threading.Thread:
    thread = threading.Thread(target=dispatcher.publish, args=([action_id],), kwargs={"backpressure": True})
    thread.start()
    return thread


def _take_one(dispatcher: EmbeddedDispatcher) -> str:
    """What a worker thread does when it picks up an action."""
    taken = dispatcher._queue.get_nowait()
    dispatcher._took_one()
    return taken


def test_submissions_within_the_bound_are_answered_at_once() -> None:
    dispatcher = EmbeddedDispatcher(bound=3)
    for number in range(3):
        dispatcher.publish([f"act_{number}"], backpressure=True)
    assert dispatcher._queue.qsize() == 3


def test_a_submission_past_the_bound_waits_until_a_worker_takes_one() -> None:
    dispatcher = EmbeddedDispatcher(bound=2)
    dispatcher.publish(["act_0", "act_1"], backpressure=True)
    waiting = _publish_in_thread(dispatcher, "act_2")
    waiting.join(0.5)
    assert waiting.is_alive(), "the third submission was answered while the workers were behind"
    assert _take_one(dispatcher) == "act_0"
    waiting.join(10)
    assert not waiting.is_alive()
    # Nothing was lost: the waiting submission's action is queued behind the others.
    assert [_take_one(dispatcher) for _ in range(2)] == ["act_1", "act_2"]


def test_many_waiting_submissions_are_released_one_per_action_taken() -> None:
    dispatcher = EmbeddedDispatcher(bound=1)
    dispatcher.publish(["act_first"], backpressure=True)
    waiting = [_publish_in_thread(dispatcher, f"act_{n}") for n in range(4)]
    for thread in waiting:
        thread.join(0.2)
    assert all(thread.is_alive() for thread in waiting)
    for _ in range(4):
        _take_one(dispatcher)
    for thread in waiting:
        thread.join(10)
    assert not any(thread.is_alive() for thread in waiting)
    assert dispatcher._queue.qsize() == 1


def test_the_sweeper_publishes_without_waiting() -> None:
    dispatcher = EmbeddedDispatcher(bound=1)
    dispatcher.publish([f"act_{n}" for n in range(10)])
    assert dispatcher._queue.qsize() == 10


def test_stopping_releases_waiting_submissions() -> None:
    dispatcher = EmbeddedDispatcher(bound=1)
    dispatcher.publish(["act_0", "act_1"])
    waiting = _publish_in_thread(dispatcher, "act_2")
    waiting.join(0.2)
    assert waiting.is_alive()
    dispatcher.stop()
    waiting.join(10)
    assert not waiting.is_alive()
