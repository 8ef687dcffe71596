"""The idempotency key of a tools/call: the client's own, or one derived from the call itself.

MCP lets a client retry a request whose answer it did not get (a broken stream, a timeout) with
a new JSON-RPC id, and most clients send no key of their own. So a call without a key in `_meta`
gets one derived from what makes it the same call: the agent, the tool, the canonical arguments
and the person it acts for, within a window (`mcp_derived_key_window_seconds`, 10 minutes by
default). The rule: a keyless call replays the most recent identical keyless call if that one
was recorded less than a window ago; otherwise it is a new action.

How, without a lock: time is cut into buckets of one window, and the key names its bucket. A
call first looks for the key of the previous bucket and replays it if its action was recorded
less than a window ago; otherwise it submits with the key of the current bucket, so concurrent
retries in one bucket insert the same key and the submission's insert-or-ignore records one
action (`outbox.idempotency`). Only retries that race each other across a bucket boundary,
before the first one committed, can record twice.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from outbox.actions import service
from outbox.actions.schemas import ActionCreate
from outbox.canonical import digest
from outbox.idempotency import service as idempotency
from outbox.sqltypes import new_id, utcnow

if TYPE_CHECKING:
    from outbox.agents.service import AuthenticatedAgent
    from outbox.runtime import Runtime

DERIVED_PREFIX = "mcp-derived:"
KeySource = Literal["meta", "derived", "none"]


@dataclass(frozen=True, slots=True)
class Submitted:
    """A submission's answer and where its key came from (recorded with the request)."""

    answer: service.Answer
    key: str
    source: KeySource


def derived_key(agent: AuthenticatedAgent, envelope: ActionCreate, window: int, bucket: int) -> str:
    """The key of this call in this bucket (a digest: printable, 12 + 64 characters)."""
    call = {
        "agent": agent.id,
        "tool": envelope.tool,
        "args": envelope.args,
        "on_behalf_of": envelope.on_behalf_of,
        "window": window,
        "bucket": bucket,
    }
    return DERIVED_PREFIX + digest(call)


def submit(
    runtime: Runtime,
    agent: AuthenticatedAgent,
    envelope: ActionCreate,
    client_key: str | None,
    record: dict[str, object],
) -> Submitted:
    """Submit through `service.submit` with the client's key, else the derived one (or, with the
    window at 0, a fresh key: every keyless call is a new action). Blocking: run it in a thread."""
    if client_key is not None:
        return _submitted(runtime, agent, envelope, client_key, "meta", record)
    window = runtime.settings.mcp_derived_key_window_seconds
    if window == 0:
        return _submitted(runtime, agent, envelope, new_id("mcp"), "none", record)
    bucket = math.floor(time.time() / window)
    previous = derived_key(agent, envelope, window, bucket - 1)
    replay = _recent_replay(runtime, agent, envelope, previous, timedelta(seconds=window))
    if replay is not None:
        return Submitted(replay, previous, "derived")
    return _submitted(runtime, agent, envelope, derived_key(agent, envelope, window, bucket), "derived", record)


def _submitted(
    runtime: Runtime,
    agent: AuthenticatedAgent,
    envelope: ActionCreate,
    key: str,
    source: KeySource,
    record: dict[str, object],
) -> Submitted:
    record = {**record, "idempotency": {"key": key, "source": source}}
    return Submitted(service.submit(runtime, agent, envelope, key, record), key, source)


def _recent_replay(
    runtime: Runtime, agent: AuthenticatedAgent, envelope: ActionCreate, key: str, window: timedelta
) -> service.Answer | None:
    """The answer of the previous bucket's key, if its action was recorded within `window`."""
    fp = idempotency.fingerprint(envelope.tool, envelope.args, envelope.on_behalf_of)
    stored = idempotency.lookup(runtime.db, agent.id, key, fp)
    if stored is None or stored.action_id is None:
        return None
    answer = service.current_answer(runtime, agent, stored.action_id, replayed=True)
    created = answer.action["created_at"] if answer.action else None
    if not isinstance(created, str) or datetime.fromisoformat(created) <= utcnow() - window:
        return None
    return answer
