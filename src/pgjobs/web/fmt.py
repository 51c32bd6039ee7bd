"""How the dashboard writes numbers, times, durations and stored values (its Jinja2 filters), and
its chart.

Times are shown in UTC with their age ("3 min ago"); counts with thousands separators, or as
``≈ 1.2 M`` when they are estimates (:class:`pgjobs.operations.counts.Count`); a job's result and a
step's cursor as their Python repr, cut at :data:`VALUE_WIDTH` characters.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pgjobs.operations.counts import Count
from pgjobs.serialization import loads_value
from pgjobs.web.throughput import Minute

if TYPE_CHECKING:
    from pgjobs.workflows.info import BatchInfo

VALUE_WIDTH = 2000  # characters of a result or a cursor shown


def human(n: float) -> str:
    """``980``, ``12 k``, ``1.2 M``: a number rounded for reading."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{n:.0f}"


def count(value: Count | int) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if value.kind == "estimate":
        return f"≈ {human(value.value)}"
    if value.kind == "at_least":
        return f"{value.value:,}+"
    return f"{value.value:,}"


def duration(seconds: float) -> str:
    """``0 s``, ``42 s``, ``3 min 12 s``, ``2 h 5 min``, ``3 d 4 h``."""
    s = max(0, math.floor(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def timestamp(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(moment: datetime | None, now: datetime) -> str:
    """``3 min ago`` / ``in 5 min``."""
    if moment is None:
        return ""
    seconds = (now - moment).total_seconds()
    if abs(seconds) < 1:
        return "now"
    return f"{duration(seconds)} ago" if seconds > 0 else f"in {duration(-seconds)}"


def stored_value(data: Any, width: int = VALUE_WIDTH) -> str:
    """A value stored by :func:`pgjobs.serialization.dumps_value` (its JSON text, or the parsed
    JSON) as its repr, cut to ``width`` characters.  One this process cannot decode (an enum
    class it cannot import, a record whose integration is not loaded here) shows its JSON."""
    try:
        text = repr(loads_value(data))
    except Exception:  # DeserializationError, or a record loader's own error
        text = data if isinstance(data, str) else json.dumps(data)
    return text if len(text) <= width else text[: width - 1] + "…"


def amount(value: float) -> str:
    """``1,234``, ``3.5``: a progress count (``done`` or ``total``)."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def percent(fraction: float | None) -> str:
    """``40%``, ``99.5%``: a progress fraction for reading ("" without one)."""
    if fraction is None:
        return ""
    value = round(fraction * 100, 1)
    return f"{value:g}%"


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    processed_y: float
    processed_height: float
    failed_y: float
    failed_height: float
    title: str  # the tooltip


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    top: int  # the y axis' maximum, in jobs per minute
    bars: list[Bar]
    ticks: list[tuple[float, str]]  # x, "HH:MM" every 10 minutes


def _nice(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (at least 5)."""
    if value <= 5:
        return 5
    power = 10 ** math.floor(math.log10(value))
    return int(next(m * power for m in (1, 2, 5, 10) if m * power >= value))


def chart(minutes: list[Minute], width: int = 720, height: int = 150) -> Chart:
    """Stacked bars, processed below failed, one per minute, for an inline SVG."""
    top = _nice(max((m.processed + m.failed for m in minutes), default=0))
    step = width / max(len(minutes), 1)
    bars, ticks = [], []
    for i, m in enumerate(minutes):
        ph = height * m.processed / top
        fh = height * m.failed / top
        at = f"{m.start.astimezone(UTC):%H:%M}"
        label = f"{at} UTC: {m.processed:,} processed, {m.failed:,} failed"
        width_ = max(step - 2, 1)
        bars.append(Bar(i * step + 1, width_, height - ph, ph, height - ph - fh, fh, label))
        if m.start.minute % 10 == 0:
            ticks.append((i * step, at))
    return Chart(width, height, top, bars, ticks)


def pretty_json(value: Any) -> str:
    """JSON data (a batch's properties) indented, as the job page shows arguments (the template
    escapes it)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def short_id(value: object) -> str:
    """An id's first eight characters (a UUID's first group), for a link that holds it whole in
    its title."""
    return str(value)[:8]


@dataclass(frozen=True)
class Segment:
    outcome: str  # succeeded | failed | discarded | cancelled
    x: float  # where it starts, in percent of the bar
    width: float  # in percent
    count: int


OUTCOMES = ("succeeded", "failed", "discarded", "cancelled")


def batch_segments(info: BatchInfo) -> list[Segment]:
    """A batch's progress bar: its ended jobs by outcome, side by side, over its total (the rest,
    pending, is the bar's background)."""
    if not info.total:
        return []
    found, x = [], 0.0
    for outcome in OUTCOMES:
        count = int(getattr(info, outcome))
        if count > 0:
            width = 100 * min(count, info.total) / info.total
            found.append(Segment(outcome, round(x, 2), round(min(width, 100 - x), 2), count))
            x += width
    return found


def batch_summary(info: BatchInfo) -> str:
    """``7/10 ended · 6 succeeded · 1 failed · 3 pending``: the outcomes that have jobs."""
    parts = [f"{info.done:,}/{info.total:,} ended"]
    parts += [f"{getattr(info, o):,} {o}" for o in OUTCOMES if getattr(info, o)]
    if info.pending:
        parts.append(f"{info.pending:,} pending")
    return " · ".join(parts)
