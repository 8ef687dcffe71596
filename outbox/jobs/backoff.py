"""When to try again: exponential backoff with full jitter, and when to stop trying.

Full jitter is the AWS Architecture Blog's definition ("Exponential Backoff And Jitter", 2015):
`sleep = random_between(0, min(cap, base * 2 ** n))`. Spreading retries over the whole interval,
not its upper half, is what keeps workers that failed together from retrying together. The random
source is a parameter so tests can seed it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# 2 ** 64 times any positive base is beyond every cap; bounding the exponent keeps the float finite.
_MAX_EXPONENT = 64
_jitter = random.Random()  # noqa: S311 (jitter, not a secret)


def full_jitter(exponent: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """A delay drawn uniformly from [0, min(cap, base * 2 ** exponent)]."""
    ceiling = min(cap, base * 2.0 ** min(max(exponent, 0), _MAX_EXPONENT))
    return (rng or _jitter).uniform(0.0, ceiling)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a job is attempted and how long it waits between attempts."""

    max_attempts: int
    base_seconds: float
    cap_seconds: float

    def exhausted(self, attempts: int) -> bool:
        """Whether a job that has used `attempts` attempts must be dead-lettered, not retried."""
        return attempts >= self.max_attempts

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after attempt number `attempt` (1-based) failed: the first retry waits
        up to `base_seconds`, each further one up to twice as long, never more than `cap_seconds`."""
        return full_jitter(attempt - 1, base=self.base_seconds, cap=self.cap_seconds, rng=rng)
