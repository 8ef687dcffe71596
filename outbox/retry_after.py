"""Retry-After (RFC 9110 §10.2.3): how long a peer asked us to wait, in seconds.

The header is either delta-seconds (`120`) or an HTTP-date (`Fri, 04 Dec 2026 17:00:00 GMT`).
Anything else, and anything that would mean "wait a negative time" (a date already past, usually
clock skew), is None, so the caller falls back to its own backoff instead of retrying at once in a
loop. The answer is not capped here: each caller caps it at what it is willing to wait.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["parse_retry_after"]

# delta-seconds = 1*DIGIT, ASCII only (str.isdigit would also take "²" or "٣"). Twenty digits is
# already far beyond any wait a caller accepts; longer strings are refused rather than converted.
_DELTA_SECONDS = re.compile(r"[0-9]{1,20}")
# An HTTP-date is printable ASCII; the date parser is lenient and would read past a NUL.
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]+")


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from `now` (timezone-aware), or None if `value` is absent or not valid."""
    if value is None:
        return None
    text = value.strip(" \t")
    if _DELTA_SECONDS.fullmatch(text):
        return float(int(text))
    if not _PRINTABLE_ASCII.fullmatch(text):
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # "-0000" parses as naive; an HTTP-date is always GMT.
        when = when.replace(tzinfo=UTC)
    seconds = (when - now).total_seconds()
    return seconds if seconds >= 0 else None
