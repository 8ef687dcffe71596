"""The mail page's figures: `outbox.mail.service.mail_status` (what `outbox mail status` and
`GET /v1/admin/mail` show), plus the history of the send counters as charts.

Sends are counted where the budgets count them: the subdomain's hourly and daily counters in
`budget_counters` (`outbox.mail.budgets.ledger`), one unit per recipient charged. Those rows are
kept per window, so the last 24 hours and the last 14 days are read back as they were charged.
The limit drawn over each column is the cap as configured now (a cap changed since applies to
the past columns only as a reference), and for days the warm-up ramp's cap of that day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from outbox.budgets.service import window_start
from outbox.console.operate import repository
from outbox.console.operate.charts import Column, ColumnChart, Rate, RateChart, column_chart, rate_chart
from outbox.mail import service as mail_service
from outbox.mail.budgets.ledger import DAY, HOUR, daily_limit, day_key, hour_key
from outbox.mail.config import SubdomainConfig
from outbox.mail.schemas import MailStatusOut, SubdomainStatusOut

if TYPE_CHECKING:
    from outbox.runtime import Runtime  # annotations only: the app hands the runtime in

HOURS_SHOWN = 24
DAYS_SHOWN = 14


@dataclass(frozen=True, slots=True)
class SubdomainView:
    status: SubdomainStatusOut
    hourly: ColumnChart
    daily: ColumnChart
    rates: RateChart


@dataclass(frozen=True, slots=True)
class MailView:
    status: MailStatusOut
    subdomains: list[SubdomainView]


def mail_view(runtime: Runtime) -> MailView:
    """Raises `MailNotConfiguredError` when there is no mail.yaml."""
    config = mail_service.mail_config(runtime)
    status = mail_service.mail_status(runtime)
    now = status.generated_at
    views = []
    for sub_status in status.subdomains:
        sub = config.subdomain(sub_status.domain)
        if sub is None:  # the configuration changed between the two reads: show it next time
            continue
        views.append(
            SubdomainView(
                sub_status, _hourly_chart(runtime, sub, now), _daily_chart(runtime, sub, now), _rates(sub_status)
            )
        )
    return MailView(status, views)


def _chart_id(prefix: str, domain: str) -> str:
    return prefix + "-" + "".join(ch if ch.isalnum() else "-" for ch in domain)


def _hourly_chart(runtime: Runtime, sub: SubdomainConfig, now: datetime) -> ColumnChart:
    current = window_start(now, HOUR)
    starts = [current - HOUR * n for n in range(HOURS_SHOWN - 1, -1, -1)]
    with runtime.db.read_session() as session:
        used = repository.counter_windows(session, hour_key(sub.domain), starts[0])
    columns = [Column(f"{start:%H}:00", used.get(start, 0), sub.budgets.per_hour) for start in starts]
    total = sum(c.value for c in columns)
    return column_chart(
        _chart_id("hourly", sub.domain),
        f"Sends per hour from {sub.domain}, last 24 hours (UTC)",
        f"{total} recipients charged in the last 24 hours; the hourly cap is {sub.budgets.per_hour}; "
        f"the busiest hour used {max(c.value for c in columns)}.",
        columns,
        label_every=3,
    )


def _daily_chart(runtime: Runtime, sub: SubdomainConfig, now: datetime) -> ColumnChart:
    today = window_start(now, DAY)
    starts = [today - DAY * n for n in range(DAYS_SHOWN - 1, -1, -1)]
    with runtime.db.read_session() as session:
        used = repository.counter_windows(session, day_key(sub.domain), starts[0])
    columns = [
        Column(f"{start:%m-%d}", used.get(start, 0), daily_limit(sub, start.astimezone(UTC).date())) for start in starts
    ]
    ramp = " (the warm-up ramp's cap of each day)" if sub.warm_up else ""
    return column_chart(
        _chart_id("daily", sub.domain),
        f"Sends per day from {sub.domain}, last {DAYS_SHOWN} days (UTC)",
        f"{sum(c.value for c in columns)} recipients charged in {DAYS_SHOWN} days against a daily cap of "
        f"{columns[-1].limit} today{ramp}; the full daily cap is {sub.budgets.per_day}.",
        columns,
        label_every=2,
    )


def _rates(status: SubdomainStatusOut) -> RateChart:
    breaker = status.breaker
    sample = f"{breaker.sent} recipients answered since {breaker.since:%Y-%m-%d %H:%M} UTC" + (
        f", fewer than the {breaker.minimum_sample} the breaker waits for"
        if breaker.sent < breaker.minimum_sample
        else ""
    )
    return rate_chart(
        _chart_id("rates", status.domain),
        f"Bounce and complaint rates of {status.domain} against the breaker's thresholds",
        f"Bounce rate {breaker.bounce_rate:.2%} (threshold {breaker.bounce_threshold:.2%}), complaint rate "
        f"{breaker.complaint_rate:.2%} (threshold {breaker.complaint_threshold:.2%}); {sample}.",
        [
            Rate("Bounces", breaker.bounce_rate, breaker.bounce_threshold),
            Rate("Complaints", breaker.complaint_rate, breaker.complaint_threshold),
        ],
    )
