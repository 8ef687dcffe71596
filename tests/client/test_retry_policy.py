"""How long the client waits before sending again, and when it stops."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from outbox.client import RetryPolicy
from outbox.client.retries import parse_retry_after

NOW = datetime(2026, 12, 4, 17, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Fri, 04 Dec 2026 17:00:30 GMT", 30.0),
        ("Fri, 04 Dec 2026 16:59:00 GMT", None),  # already past (clock skew): the backoff decides
        ("Fri, 04 Dec 2026 17:01:00 -0000", 60.0),
        (None, None),
        ("", None),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("١٢", None),  # not ASCII digits
        ("9" * 21, None),
    ],
)
def test_retry_after_is_delta_seconds_or_an_http_date(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


def test_backoff_doubles_up_to_its_ceiling_with_full_jitter() -> None:
    policy = RetryPolicy(attempts=10, backoff=0.5, max_backoff=2.0)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 2.0)]:
        delays = [policy.delay(attempt, None) for _ in range(200)]
        assert all(d is not None and 0 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered: clients failing together do not return together


def test_a_retry_after_is_honoured_never_shortened_and_above_the_cap_ends_the_retries() -> None:
    policy = RetryPolicy(attempts=3, max_retry_after=30)
    delays = [policy.delay(1, 10.0) for _ in range(100)]
    assert all(d is not None and 10.0 <= d <= 11.0 for d in delays)
    assert policy.delay(1, 31.0) is None
    assert policy.delay(1, 0.0) == 0.0


def test_attempts_count_the_first_one() -> None:
    policy = RetryPolicy(attempts=3)
    assert policy.delay(2, 1.0) is not None
    assert policy.delay(3, 1.0) is None
    assert RetryPolicy(attempts=1).delay(1, None) is None
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(attempts=0)
