"""The overview's throughput chart as SVG geometry: one stacked bar per minute (completed, failed). Pure.

Rendered server-side by the template (no JavaScript, no build step); colours come from the stylesheet's classes,
so the page's Content-Security-Policy needs no inline styles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pgqueue.dashboard.data import Minute

WIDTH = 1100
HEIGHT = 220
LEFT = 48  # room for the y-axis labels
BOTTOM = 22  # room for the time labels
TOP = 8


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    completed_y: float
    completed_height: float
    failed_y: float
    failed_height: float
    complete: bool
    title: str


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class TimeLabel:
    x: float
    label: str
    anchor: str = "middle"


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    plot_bottom: float
    bars: list[Bar]
    ticks: list[Tick]
    times: list[TimeLabel]
    total_completed: int
    total_failed: int
    peak: int


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^n (n >= 0) that is >= value, at least 5."""
    if value <= 5:
        return 5
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def build(minutes: Sequence[Minute]) -> Chart:
    plot_bottom = HEIGHT - BOTTOM
    plot_height = plot_bottom - TOP
    peak = max((m.completed + m.failed for m in minutes), default=0)
    top = nice_ceiling(peak)
    slot = (WIDTH - LEFT) / max(1, len(minutes))
    bars = []
    for index, minute in enumerate(minutes):
        completed_h = plot_height * minute.completed / top
        failed_h = plot_height * minute.failed / top
        x = LEFT + index * slot
        bars.append(
            Bar(
                x=round(x + 1, 2),
                width=round(max(1.0, slot - 2), 2),
                completed_y=round(plot_bottom - completed_h, 2),
                completed_height=round(completed_h, 2),
                failed_y=round(plot_bottom - completed_h - failed_h, 2),
                failed_height=round(failed_h, 2),
                complete=minute.complete,
                title=_title(minute),
            )
        )
    ticks = [Tick(y=round(plot_bottom - plot_height * f, 2), label=_short(int(top * f))) for f in (0, 0.5, 1)]
    times = [
        TimeLabel(x=round(LEFT + index * slot + slot / 2, 2), label=_hhmm(minutes[index].start))
        for index in range(0, len(minutes), 10)
    ]
    if minutes:
        times.append(TimeLabel(x=WIDTH, label="now", anchor="end"))
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        plot_bottom=plot_bottom,
        bars=bars,
        ticks=ticks,
        times=times,
        total_completed=sum(m.completed for m in minutes),
        total_failed=sum(m.failed for m in minutes),
        peak=peak,
    )


def _title(minute: Minute) -> str:
    text = f"{_hhmm(minute.start)} UTC: {minute.completed:,} completed, {minute.failed:,} failed"
    return text if minute.complete else text + " (not fully counted: busier than the overview reads)"


def _hhmm(when: datetime) -> str:
    return when.strftime("%H:%M")


def _short(value: int) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1_000:
        return f"{value / 1_000:g}k"
    return str(value)
