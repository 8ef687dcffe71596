"""Send windows across weekends and daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from outbox.mail.config import SendWindow
from outbox.mail.sending.windows import first_instant_at, next_allowed, window_bounds

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def window(days: list[str], start: str, end: str, timezone: str) -> SendWindow:
    return SendWindow.model_validate({"days": days, "start": start, "end": end, "timezone": timezone})


WEEKDAYS_NY = window(["mon", "tue", "wed", "thu", "fri"], "08:00", "18:00", "America/New_York")


def test_inside_the_window_sending_is_allowed_now() -> None:
    assert next_allowed(WEEKDAYS_NY, datetime(2026, 3, 4, 12, 0, tzinfo=NEW_YORK)) is None


def test_the_window_is_half_open() -> None:
    assert next_allowed(WEEKDAYS_NY, datetime(2026, 3, 4, 8, 0, tzinfo=NEW_YORK)) is None
    closes = datetime(2026, 3, 4, 18, 0, tzinfo=NEW_YORK)
    assert next_allowed(WEEKDAYS_NY, closes) == datetime(2026, 3, 5, 8, 0, tzinfo=NEW_YORK)


def test_before_opening_waits_for_the_same_day() -> None:
    early = datetime(2026, 3, 4, 5, 0, tzinfo=NEW_YORK)
    assert next_allowed(WEEKDAYS_NY, early) == datetime(2026, 3, 4, 13, 0, tzinfo=UTC)


def test_friday_evening_waits_for_monday_across_the_spring_forward_weekend() -> None:
    # US clocks go forward on Sunday 8 March 2026: Friday is EST (UTC-5), Monday EDT (UTC-4).
    friday_evening = datetime(2026, 3, 6, 19, 0, tzinfo=NEW_YORK)
    opens = next_allowed(WEEKDAYS_NY, friday_evening)
    assert opens == datetime(2026, 3, 9, 12, 0, tzinfo=UTC)
    assert opens is not None
    assert opens.astimezone(NEW_YORK).time() == time(8, 0)


def test_a_window_opening_inside_the_spring_forward_gap_opens_at_the_jump() -> None:
    # Berlin, 29 March 2026: 02:00 CET jumps to 03:00 CEST (01:00 UTC). 02:30 never shows on the
    # wall clock; the first instant it has passed 02:30 is the jump itself.
    sunday = window(["sun"], "02:30", "05:00", "Europe/Berlin")
    saturday = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    assert next_allowed(sunday, saturday) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert next_allowed(sunday, datetime(2026, 3, 29, 1, 0, tzinfo=UTC)) is None
    assert next_allowed(sunday, datetime(2026, 3, 29, 0, 59, tzinfo=UTC)) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


def test_a_window_opening_in_the_repeated_fall_back_hour_opens_at_its_first_occurrence() -> None:
    # Berlin, 25 October 2026: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    opening = first_instant_at(date(2026, 10, 25), time(2, 30), BERLIN)
    assert opening == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_the_fall_back_day_is_an_hour_longer_in_utc() -> None:
    sunday = window(["sun"], "00:00", "24:00", "Europe/Berlin")
    opens, closes = window_bounds(sunday, date(2026, 10, 25), BERLIN)
    assert opens == datetime(2026, 10, 24, 22, 0, tzinfo=UTC)  # midnight CEST
    assert closes - opens == timedelta(hours=25) - timedelta(microseconds=1)
    assert next_allowed(sunday, datetime(2026, 10, 25, 22, 30, tzinfo=UTC)) is None  # 23:30 CET
    # 23:00 UTC is Monday 00:00 CET: closed until the next Sunday's midnight.
    assert next_allowed(sunday, datetime(2026, 10, 25, 23, 0, tzinfo=UTC)) == datetime(2026, 10, 31, 23, 0, tzinfo=UTC)


def test_the_recipients_zone_overrides_the_window_zone() -> None:
    nine_utc = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)  # 04:00 in New York, 18:00 in Tokyo
    assert next_allowed(WEEKDAYS_NY, nine_utc) == datetime(2026, 3, 4, 13, 0, tzinfo=UTC)
    assert next_allowed(WEEKDAYS_NY, nine_utc, "Europe/London") is None
    assert next_allowed(WEEKDAYS_NY, nine_utc, "Asia/Tokyo") == datetime(2026, 3, 4, 23, 0, tzinfo=UTC)


def test_no_window_means_always_open_and_naive_times_are_refused() -> None:
    assert next_allowed(None, datetime(2026, 3, 4, 3, 0, tzinfo=UTC)) is None
    with pytest.raises(ValueError, match="timezone-aware"):
        next_allowed(WEEKDAYS_NY, datetime(2026, 3, 4, 3, 0))
