"""The warm-up ramp: how much a new sending subdomain may send per day.

Receivers judge a new sending domain by its first weeks of volume, so the ramp is what buys it a
reputation. `outbox.mail.budgets.ledger` turns the day's figure into the subdomain's daily cap.
"""

from __future__ import annotations

import math
from datetime import date


def warmup_daily_cap(today: date, start_date: date, initial: int, factor: float, full_cap: int) -> int:
    """The day's cap during warm-up: `initial * factor ** days_since_start`, up to `full_cap`.

    Nothing may be sent before the start date. Receivers judge a new sending domain by its first
    weeks of volume, so the ramp is what buys it a reputation.
    """
    days = (today - start_date).days
    if days < 0:
        return 0
    if factor <= 1.0:
        return min(initial, full_cap)
    # Compare in log space: factor ** days overflows a float long before the ramp is over.
    if days * math.log(factor) >= math.log(full_cap / initial):
        return full_cap
    return min(full_cap, math.floor(initial * factor**days))
