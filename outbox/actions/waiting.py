"""Waiting for an action to settle for now: the one rule every face uses.

HTTP's `Prefer: wait=N` and MCP's tools/call both hold their answer a little while so that an
agent gets the outcome instead of a pending action to poll. Both stop at the same moment: when
the action will not change any more without something outside the pipeline happening. That is a
terminal status; `deferred` (a closed send window or a spent budget: nothing happens before its
`not_before`, which the answer carries with a Retry-After); and `awaiting_approval`, until a human
decides, for a caller that does not hold for the human. Holding the agent longer than that only
costs it a connection and tells it nothing.

The truth is the database, shared by every replica, so waiting polls it (backing off to a read
every quarter second); the pipeline publishes no per-action notifications to wait on.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from outbox.actions.models import ActionStatus
from outbox.actions.service import Answer, current_answer

if TYPE_CHECKING:
    from outbox.agents.service import AuthenticatedAgent
    from outbox.runtime import Runtime

__all__ = ["settled_for_now", "wait_until_settled"]

_SETTLED = frozenset({*(s.value for s in ActionStatus if s.is_terminal), ActionStatus.DEFERRED.value})

# Polling: the first reads come quickly (most allowed calls finish within milliseconds), then
# every quarter second at most.
_FIRST_DELAY = 0.02
_BACKOFF = 1.5
_MAX_DELAY = 0.25


def settled_for_now(status: str, *, hold_for_human: bool = True) -> bool:
    """Whether an action in `status` stays so until something outside the pipeline happens.

    Terminal and deferred actions are settled. An action awaiting approval is settled for a
    caller that does not hold for the human (`hold_for_human=False`: MCP answers it at once with
    the pending action); `Prefer: wait` holds for the human, and the human's decision either ends
    the action (rejected) or queues it, and then the wait goes on until it ran or was deferred.
    """
    if status in _SETTLED:
        return True
    return status == ActionStatus.AWAITING_APPROVAL.value and not hold_for_human


async def wait_until_settled(
    runtime: Runtime,
    agent: AuthenticatedAgent,
    answer: Answer,
    seconds: float,
    *,
    hold_for_human: bool = True,
) -> Answer:
    """`answer` (what `service.submit` returned) once its action is settled for now, or as it is
    after `seconds`, whichever comes first: the action's current answer (`service.answer_for`:
    200 when terminal, 202 pending or deferred with `retry_after`, the problem document of an
    outcome decided against the call). An answer without an action is returned as it is."""
    if answer.action is None or answer.action_id is None:
        return answer
    deadline = time.monotonic() + seconds
    delay = _FIRST_DELAY
    while not settled_for_now(answer.action["status"], hold_for_human=hold_for_human):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        await anyio.sleep(min(delay, remaining))
        delay = min(delay * _BACKOFF, _MAX_DELAY)
        answer = await anyio.to_thread.run_sync(_reread, runtime, agent, answer)
        assert answer.action is not None  # read from the action's row
    return answer


def _reread(runtime: Runtime, agent: AuthenticatedAgent, answer: Answer) -> Answer:
    assert answer.action_id is not None
    return current_answer(runtime, agent, answer.action_id, replayed=answer.replayed)
