"""When the client sends a request again, and how long it waits first.

Retrying a submission is safe only because every attempt carries the same Idempotency-Key
(draft-ietf-httpapi-idempotency-key-header): the outbox records the call once and answers a
repeated key with the recorded action. So the client retries exactly the answers after which the
same request may succeed and cannot have run twice:

- the request never got an answer (connection refused or reset, timeout): the call may or may
  not be recorded; the same key finds out;
- 409 `idempotency-key-in-progress`: an earlier attempt with this key is still being processed;
- 429 and 503: the outbox (or a proxy in front of it) asks to come back later, usually with
  Retry-After (RFC 9110 §10.2.3: delta-seconds or an HTTP-date);
- 500, 502, 504: the outbox's own 500 says "retry with the same Idempotency-Key", and 502/504
  come from proxies that lost the answer.

Waits back off exponentially with full jitter (many agents failing together must not come back
together); a Retry-After is honoured as asked, plus a little jitter, unless it is longer than
`max_retry_after`: then the client does not sleep at all and raises the error with
`.retry_after`, so a caller with its own scheduler comes back later instead of blocking a thread.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

from outbox.retry_after import parse_retry_after as read_retry_after

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "parse_retry_after"]

RETRYABLE_STATUSES = frozenset({409, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts a call gets and how long to wait between them.

    `attempts` counts the first one (1 means never retry). `backoff` is the first wait when the
    server gave no Retry-After, doubled each time up to `max_backoff`, with full jitter.
    """

    attempts: int = 5
    backoff: float = 0.25
    max_backoff: float = 8.0
    max_retry_after: float = 30.0
    statuses: frozenset[int] = field(default=RETRYABLE_STATUSES)
    retry_transport_errors: bool = True

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts counts the first attempt: at least 1")
        if self.backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ValueError("waits cannot be negative")

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before attempt `attempt + 1` (attempt counts from 1), or None to give up."""
        if attempt >= self.attempts:
            return None
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            # A little jitter on top, never below what the server asked for.
            return retry_after + random.uniform(0, min(1.0, retry_after * 0.1))  # noqa: S311 - jitter, not a secret
        ceiling = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not a secret


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from `now` that a Retry-After header asks for, or None if absent or unreadable.

    Read by the server's own parser (`outbox.retry_after`, standard library only): a date already
    past (usually clock skew) is None too, so the client falls back to its backoff.
    """
    return read_retry_after(value, now=now or datetime.now(UTC))
