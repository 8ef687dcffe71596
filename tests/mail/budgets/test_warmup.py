"""The warm-up ramp of a new sending subdomain."""

from __future__ import annotations

from datetime import date

import pytest

from outbox.mail.budgets.warmup import warmup_daily_cap


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        (date(2026, 1, 4), 0),  # before the start date nothing may be sent
        (date(2026, 1, 5), 50),
        (date(2026, 1, 6), 75),
        (date(2026, 1, 7), 112),
        (date(2026, 1, 12), 854),
        (date(2026, 1, 13), 1000),  # 1281 capped at the full daily budget
        (date(2036, 1, 5), 1000),  # years later: no float overflow
    ],
)
def test_warm_up_grows_by_the_factor_each_day_up_to_the_full_cap(today: date, expected: int) -> None:
    assert warmup_daily_cap(today, date(2026, 1, 5), 50, 1.5, 1000) == expected
