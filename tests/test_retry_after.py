"""Retry-After: delta-seconds or an HTTP-date; anything else, or a wait into the past, is None."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from outbox.retry_after import parse_retry_after

NOW = datetime(2026, 12, 4, 16, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("0", 0.0), ("1", 1.0), ("120", 120.0), (" 30\t", 30.0), ("007", 7.0), ("86400", 86400.0)],
)
def test_delta_seconds_are_read_as_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_a_very_large_delta_is_returned_for_the_caller_to_cap() -> None:
    assert parse_retry_after("99999999999", now=NOW) == 99999999999.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("Fri, 04 Dec 2026 16:02:00 GMT", 120.0),  # IMF-fixdate, the preferred form
        ("Friday, 04-Dec-26 16:00:30 GMT", 30.0),  # obsolete RFC 850 form
        ("Fri Dec  4 16:00:05 2026", 5.0),  # obsolete asctime form
        ("Fri, 04 Dec 2026 16:00:00 GMT", 0.0),  # exactly now
        ("Fri, 04 Dec 2026 17:00:00 +0100", 0.0),  # an offset is honoured
        ("Fri, 04 Dec 2026 16:01:00 -0000", 60.0),  # "-0000" is still GMT
    ],
)
def test_http_dates_are_read_as_the_time_left_until_them(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_the_wait_is_measured_from_the_given_now() -> None:
    value = "Fri, 04 Dec 2026 16:10:00 GMT"
    assert parse_retry_after(value, now=NOW + timedelta(minutes=5)) == 300.0


@pytest.mark.parametrize(
    "value",
    [
        "Fri, 04 Dec 2026 15:59:59 GMT",  # a moment ago
        "Thu, 01 Jan 1970 00:00:00 GMT",  # long ago
        "-5",  # negative delta-seconds
        "-0",
    ],
)
def test_a_wait_into_the_past_is_none(value: str) -> None:
    assert parse_retry_after(value, now=NOW) is None


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "1.5",  # delta-seconds are whole numbers
        "+5",
        "1e3",
        "0x10",
        "5 seconds",
        "5, 6",
        "٣",  # a digit, but not an ASCII one
        "²",
        "1" * 21,  # longer than any real wait; refused rather than converted
        "9" * 5000,  # beyond int()'s digit limit
        "soon",
        "Fri, 32 Dec 2026 16:00:00 GMT",
        "Fri, 04 Foo 2026 16:00:00 GMT",
        "Fri, 04 Dec 99999 16:00:00 GMT",
        "Fri, 04 Dec 2026 25:61:00 GMT",
        "Fri, 04 Dec 2026 16:00:00 GMT\x00",
        "Fri, 04 Dec 2026 16:00:00 GMT\u2028",
    ],
)
def test_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None
