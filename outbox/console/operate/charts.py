"""The geometry of the mail page's charts, drawn as SVG by the templates (`_charts.html`).

Server-side SVG needs no script and no chart library, so the page passes the console's strict
Content-Security-Policy and works offline. Every chart carries a title and a description for
screen readers, and the page shows the same numbers as text beside it: a chart is a summary,
never the only place a figure appears.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# The drawing area, in viewBox units; the SVG scales to the width of its container.
WIDTH = 640.0
HEIGHT = 180.0
LEFT = 48.0  # room for the value axis labels
BOTTOM = 28.0  # room for the category labels
TOP = 12.0
RIGHT = 8.0
TICKS = 4


@dataclass(frozen=True, slots=True)
class Column:
    """One category of a column chart: its value, and the limit that applied to it (None: none)."""

    label: str
    value: int
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class DrawnColumn:
    label: str
    value: int
    limit: int | None
    x: float
    y: float
    width: float
    height: float
    # The limit's level over this column, in drawing units (None: no limit).
    limit_y: float | None
    over: bool
    show_label: bool


@dataclass(frozen=True, slots=True)
class Tick:
    value: int
    y: float


@dataclass(frozen=True, slots=True)
class ColumnChart:
    id: str
    title: str
    description: str
    columns: tuple[DrawnColumn, ...]
    ticks: tuple[Tick, ...]
    width: float = WIDTH
    height: float = HEIGHT
    left: float = LEFT
    baseline: float = HEIGHT - BOTTOM

    @property
    def total(self) -> int:
        return sum(c.value for c in self.columns)


def _nice_ceiling(value: float) -> int:
    """The smallest of 1, 2, 5 × 10^k at or above `value` (at least 1): round axis ends."""
    if value <= 1:
        return 1
    magnitude = 1
    while magnitude * 10 < value:
        magnitude *= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def column_chart(
    chart_id: str, title: str, description: str, columns: Sequence[Column], *, label_every: int = 1
) -> ColumnChart:
    """Columns of `value` with each column's `limit` drawn as a level across it, so a ramp shows
    as steps. The scale fits the highest of values and limits."""
    top = _nice_ceiling(max([1, *(c.value for c in columns), *(c.limit or 0 for c in columns)]))
    plot_height = HEIGHT - BOTTOM - TOP
    baseline = HEIGHT - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(len(columns), 1)
    gap = min(4.0, slot * 0.2)

    def level(value: int) -> float:
        return baseline - plot_height * value / top

    drawn = tuple(
        DrawnColumn(
            label=c.label,
            value=c.value,
            limit=c.limit,
            x=round(LEFT + i * slot + gap / 2, 2),
            y=round(level(c.value), 2),
            width=round(slot - gap, 2),
            height=round(baseline - level(c.value), 2),
            limit_y=None if c.limit is None else round(level(c.limit), 2),
            over=c.limit is not None and c.value > c.limit,
            show_label=i % label_every == 0 or i == len(columns) - 1,
        )
        for i, c in enumerate(columns)
    )
    ticks = tuple(Tick(top * n // TICKS, round(level(top * n // TICKS), 2)) for n in range(TICKS + 1))
    return ColumnChart(chart_id, title, description, drawn, ticks)


@dataclass(frozen=True, slots=True)
class Rate:
    """A measured rate and the threshold at which it trips something."""

    label: str
    rate: float
    threshold: float


@dataclass(frozen=True, slots=True)
class DrawnRate:
    label: str
    rate: float
    threshold: float
    y: float
    width: float
    threshold_x: float
    over: bool


@dataclass(frozen=True, slots=True)
class RateChart:
    id: str
    title: str
    description: str
    rows: tuple[DrawnRate, ...]
    width: float
    height: float
    left: float
    bar_height: float


RATE_LEFT = 110.0
RATE_ROW = 34.0
RATE_BAR = 18.0


def rate_chart(chart_id: str, title: str, description: str, rates: Sequence[Rate]) -> RateChart:
    """Horizontal bars of each rate with its threshold marked. The scale runs to one and a half
    times the larger of the rate and its threshold, so the marker never sits at the edge; each
    row has its own scale because thresholds differ by orders of magnitude (4 % against 0.1 %)."""
    span = WIDTH - RATE_LEFT - RIGHT - 60.0  # room after the bar for the figure
    rows = []
    for i, r in enumerate(rates):
        top = max(r.rate, r.threshold) * 1.5 or 1.0
        rows.append(
            DrawnRate(
                label=r.label,
                rate=r.rate,
                threshold=r.threshold,
                y=round(TOP + i * RATE_ROW, 2),
                width=round(span * r.rate / top, 2),
                threshold_x=round(RATE_LEFT + span * r.threshold / top, 2),
                over=r.rate >= r.threshold > 0,
            )
        )
    height = TOP * 2 + RATE_ROW * max(len(rates), 1)
    return RateChart(chart_id, title, description, tuple(rows), WIDTH, height, RATE_LEFT, RATE_BAR)
