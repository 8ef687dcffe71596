"""Send windows: when a subdomain may send (how much it may send while new is `budgets/warmup.py`).

A window is a set of weekdays and wall-clock hours in a time zone (the recipient's when the agent
knows it, the subdomain's otherwise). Mail outside it is deferred to the next opening, never
dropped. Wall clocks jump at daylight-saving changes, so the window is defined by instants: it
opens at the first instant the local clock reads `start` and closes at the first instant it reads
`end`. On a spring-forward day a 02:30 opening therefore happens at the jump (the clock reads
03:00, which is past 02:30); on a fall-back day a repeated hour opens at its first occurrence.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from outbox.mail.config import WEEKDAYS, SendWindow


def _wall_time(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def first_instant_at(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) at which the local clock in `zone` reads `clock` or later on `day`."""
    wall = datetime.combine(day, clock)
    earlier = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _wall_time(earlier, zone) == wall:
        return earlier  # the time exists (fold=0 is its first occurrence when it exists twice)
    # `wall` falls in a gap. Both folds map it to instants around the jump; the jump itself is the
    # first instant whose wall time has passed `wall`. Bisect to the microsecond.
    low = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = earlier
    low, high = min(low, high), max(low, high)
    while high - low > timedelta(microseconds=1):
        middle = low + (high - low) / 2
        if _wall_time(middle, zone) >= wall:
            high = middle
        else:
            low = middle
    return high


def window_bounds(window: SendWindow, day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The window on one local calendar day, as UTC instants [opens, closes)."""
    return first_instant_at(day, window.start, zone), first_instant_at(day, window.end, zone)


def next_allowed(window: SendWindow | None, now: datetime, timezone: str | None = None) -> datetime | None:
    """None when sending is allowed at `now`; otherwise the UTC instant the window next opens.

    `timezone` is the recipient's zone when known; the window's own zone is used otherwise.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if window is None:
        return None
    zone = ZoneInfo(timezone) if timezone else window.zone()
    today = now.astimezone(zone).date()
    # A window lies within its local day (start < end), so earlier days are closed already.
    for offset in range(8):
        day = today + timedelta(days=offset)
        if WEEKDAYS[day.weekday()] not in window.days:
            continue
        opens, closes = window_bounds(window, day, zone)
        if opens <= now < closes:
            return None
        if now < opens:
            return opens
    raise AssertionError("a window with at least one day opens within a week")  # pragma: no cover
