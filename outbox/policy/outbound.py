"""Policy targets of requests the outbox makes for an agent that are not tool calls: callbacks.

A callback (`callback_url` on a submission) is an outbound POST made on the agent's behalf, so
it is decided like any other request: act `callback` on the `http:` object of the callback URL's
canonical form (`outbox/urls.py`), for the agent that asks. Only `allow` permits it; there is
no human to approve a callback, so `approve` refuses it too.
"""

from __future__ import annotations

from outbox.toolkit.base import Target
from outbox.urls import CanonicalURL

CALLBACK_ACT = "callback"
# Every object a callback can produce, for `policy check` (any host, any path).
CALLBACK_PATTERN = Target("http:{authority}/**", CALLBACK_ACT)


def callback_target(url: CanonicalURL) -> Target:
    return Target(url.policy_object("http"), CALLBACK_ACT)


__all__ = ["CALLBACK_ACT", "CALLBACK_PATTERN", "callback_target"]
