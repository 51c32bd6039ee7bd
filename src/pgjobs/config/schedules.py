"""Recurring-task schedules: parse what the user wrote and compute when it fires.

Accepted forms (``parse_schedule``), each with an optional time zone -- an IANA name
(``America/New_York``, ``UTC``, ``Z``) or a fixed offset as fugit writes it (``+09:00``,
``-0530``); after ``in``/``on`` too, as fugit allows: last after a cron or macro, anywhere in
English (``at 7am Asia/Seoul every day``).  Without a zone the schedule runs in UTC.

- cron with 5 fields (``*/30 * * * *``) or 6 fields with the seconds **first**, as fugit (Solid
  Queue) reads them: ``*/30 * * * * *`` is every 30 seconds.  croniter's order, seconds last,
  must be asked for: ``seconds-last 0 9 * * * 30`` is 09:00:30.  Macros: ``@hourly @daily
  @midnight @weekly @monthly @yearly @annually``.  fugit's extensions of the day fields, which
  croniter lacks, are matched here (:class:`_Days`): days of the month counted from its end
  (``-1`` the last, ``-2`` the one before, ``-7-L``; ``last``), the n-th last weekday of the
  month (``fri#-1``, ``1#L``), every n-th week (``tue%2``, ``mon%2+1``: weeks counted from
  2019-01-01, week 1) and ``&`` (day of the month AND day of the week).
- English in fugit's grammar (:mod:`pgjobs.config.schedules_nat`): ``every 5m``, ``every hour at
  minute 12``, ``every weekday at five pm``, ``every month on the 1st at 3am``, ``at noon every
  day``, ``every Mon to Thu, 18:20``...  Each becomes one cron with fugit's meaning, so steps
  that do not divide their unit are *calendar* steps, not true intervals: ``every 7 minutes`` is
  ``*/7 * * * *`` (:00, :07 ... :56, then :00 again, 4 minutes later); ``every 3 days`` is
  ``0 0 */3 * *`` (the 1st, 4th ... 31st, then the 1st of the next month).  Times of day that one
  cron cannot hold (``every day at 9am and 3:30pm``) are rejected naming the crons they need.

``Schedule.cron`` is always in croniter's order (seconds, when present, last); its day fields
may hold fugit's extensions.

Time zones and daylight saving
------------------------------
The cron is matched against the *wall clock* of the schedule's zone; each match is converted
to a UTC instant.  Around a daylight-saving change two kinds of schedule behave differently:

- **every-hour schedules** -- those whose hour field covers all 24 hours (``*/15 * * * *``,
  ``every 15 minutes``, ``@hourly``, every-second schedules): they fire at every real instant
  whose local wall clock matches.  Wall-clock times skipped when clocks spring forward do not
  exist and fire nothing; times repeated when clocks fall back fire in both passes.  So
  ``every 15 minutes`` in New York fires 92 times on 2025-03-09 (a 23-hour day) and 100 times
  on 2025-11-02 (25 hours), every 15 real minutes, with no gap and no duplicate.
- **all other (fixed-time) schedules** -- ``every day at 2:30``, ``0 */2 * * *`` ... : each
  matching wall-clock time fires exactly once.  (a) A time that does not exist (02:30 on
  2025-03-09 in New York) fires once, shifted forward by the length of the gap: at 03:30 EDT
  = 07:30 UTC, which is 24 real hours after the previous day's 02:30 EST (Python's ``fold=0``
  reading).  (b) A time that occurs twice (01:30 on 2025-11-02 in New York) fires once, at
  its first occurrence: 01:30 EDT = 05:30 UTC.  If a shifted time lands on another tick, the
  schedule fires once at that instant.

croniter's own time-zone handling is not used: croniter walks *naive* local wall-clock time
and this module does the conversion (assuming a zone changes its offset at most once a day,
which holds for current tz data).  Ticks are always returned as aware UTC datetimes,
strictly increasing and without duplicates; ``next_after`` called with its own result
returns the following tick.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from datetime import timezone as fixed_offset
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pgjobs.config.schedules_nat import NotUnderstoodError, english_to_cron
from pgjobs.errors import ConfigurationError

__all__ = ["SECONDS_LAST", "Schedule", "parse_schedule"]

_SECOND = timedelta(seconds=1)
_DAY = timedelta(days=1)
# Fixed offsets as fugit writes them (+09:00, -0530), up to +14:00 (fugit: up to 11:45).
_OFFSET = re.compile(r"([+-])(0\d|1[0-3]|14(?=:?00)):?(00|15|30|45)")
_TINY = timedelta(microseconds=1)
_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
SECONDS_LAST = "seconds-last"
_FORMS = (
    "Accepted forms: a cron expression with 5 fields ('*/30 * * * *') or 6 with the seconds "
    "first as in fugit ('30 0 9 * * *'; croniter's order: 'seconds-last 0 9 * * * 30'); a "
    "macro (@hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually); or English "
    "such as 'every 10 seconds', 'every 5 minutes', 'every 2 hours', "
    "'every day at 3:30pm', 'every monday and friday at 9am', 'every weekday at 9:30', "
    "'every hour at minute 12', 'every month on the 1st at 3am', 'at noon every day'. Any "
    "of them may end with an IANA time zone or an offset: 'every day at 8am America/New_York', "
    "'0 9 * * * +09:00'."
)


class _Walker(Protocol):
    """What the schedule walks: croniter, or :class:`_DayFiltered` (its ticks are naive)."""

    def get_next(self, ret_type: type[datetime]) -> datetime: ...

    def get_prev(self, ret_type: type[datetime]) -> datetime: ...


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: ``cron`` matched on the wall clock of ``timezone`` (see module doc)."""

    source: str
    cron: str
    timezone: tzinfo = field(default=ZoneInfo("UTC"))  # a ZoneInfo, or a fixed offset
    _every_hour: bool = field(init=False, repr=False, compare=False)
    _base: str = field(init=False, repr=False, compare=False)  # what croniter walks
    _days: _Days | None = field(init=False, repr=False, compare=False)  # fugit's day fields

    def __post_init__(self) -> None:
        from croniter import CroniterBadDateError, croniter  # ~7 MiB: when used

        try:
            base, days = _split(self.cron)
        except NotUnderstoodError as exc:
            raise ConfigurationError(
                f"invalid cron expression {self.cron!r} in {self.source!r}: {exc}"
            ) from None
        if not croniter.is_valid(base):
            raise ConfigurationError(f"invalid cron expression {self.cron!r} in {self.source!r}")
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "_days", days)
        try:
            self._ticks(datetime(2000, 1, 1)).get_next(datetime)
        except CroniterBadDateError:
            raise ConfigurationError(
                f"cron expression {self.cron!r} in {self.source!r} never matches a date"
            ) from None
        object.__setattr__(self, "_every_hour", croniter(base).expanded[1] == ["*"])

    def _ticks(self, start: datetime) -> _Walker:
        """croniter over the cron from ``start`` (naive), fugit's day fields applied."""
        from croniter import croniter  # ~7 MiB: when used

        if self._days is None:
            return croniter(self._base, start)
        return _DayFiltered(self._base, start, self._days)

    def next_after(self, after: datetime) -> datetime:
        """The first tick strictly after ``after`` (an aware datetime), in UTC."""
        for tick in self._forward(_naive_utc(after)):
            return tick.replace(tzinfo=UTC)
        raise ConfigurationError(f"schedule {self.source!r} has no tick after {after}")

    def ticks_between(
        self, start: datetime, end: datetime, limit: int | None = None
    ) -> list[datetime]:
        """The ticks in ``(start, end]``, oldest first, in UTC; at most the first ``limit``."""
        if limit is not None and limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        last, ticks = _naive_utc(end), list[datetime]()
        if limit == 0:
            return ticks
        for tick in self._forward(_naive_utc(start)):
            if tick > last:
                break
            ticks.append(tick.replace(tzinfo=UTC))
            if len(ticks) == limit:
                break
        return ticks

    def previous_at_or_before(self, moment: datetime) -> datetime | None:
        """The latest tick at or before ``moment``, in UTC (None if there is none)."""
        until = _naive_utc(moment)
        tick = self._previous_instant(until) if self._every_hour else self._previous_wall(until)
        return None if tick is None else tick.replace(tzinfo=UTC)

    # Below, instants are naive UTC datetimes and wall-clock times naive local ones.

    def _forward(self, after: datetime) -> Iterator[datetime]:
        return self._forward_instant(after) if self._every_hour else self._forward_wall(after)

    # Every-hour schedules: while the zone's offset stays the same, the ticks are the cron's
    # wall-clock times minus that offset; at a change, continue with the new offset.

    def _forward_instant(self, after: datetime) -> Iterator[datetime]:
        from croniter import CroniterBadDateError  # ~7 MiB: when used

        start, offset = after, self._offset(after)
        while True:
            cron = self._ticks((start + offset).replace(microsecond=0))
            while True:
                try:
                    tick = cron.get_next(datetime) - offset
                except CroniterBadDateError:
                    return
                change = self._change(start, tick, offset)
                if change is not None:
                    start, offset = change - _TINY, self._offset(change)
                    break
                yield tick
                start = tick

    def _previous_instant(self, until: datetime) -> datetime | None:
        from croniter import CroniterBadDateError  # ~7 MiB: when used

        offset = self._offset(until)
        while True:
            cron = self._ticks((until + offset).replace(microsecond=0) + _SECOND)
            try:
                tick = cron.get_prev(datetime) - offset
            except CroniterBadDateError:
                return None
            change = self._change(until, tick, offset)
            if change is None:
                return tick
            until = change - _TINY
            offset = self._offset(until)

    def _change(self, start: datetime, stop: datetime, offset: timedelta) -> datetime | None:
        """Where ``offset`` ends between ``start`` (which has it) and ``stop``, either way.

        Going forward, the first instant with another offset; going backward, the first
        instant of the stretch with ``offset``.  None if the offset is the same all along.
        Probes daily, then bisects to the second (zone transitions are on whole seconds).
        """
        forward, near = stop > start, start
        while near != stop:
            far = min(near + _DAY, stop) if forward else max(near - _DAY, stop)
            if self._offset(far) != offset:
                low, high = (near, far) if forward else (far, near)
                while high - low > _SECOND:  # the change is in (low, high]
                    middle = low + (high - low) / 2
                    if (self._offset(middle) != offset) == forward:
                        high = middle
                    else:
                        low = middle
                whole = high.replace(microsecond=0)
                return whole if whole > low else high
            near = far
        return None

    # Fixed-time schedules: each wall-clock time fires at its fold=0 reading.  Wall-clock and
    # UTC order differ near a change, so candidates wait in a heap until no later wall-clock
    # time can give an earlier instant.

    def _forward_wall(self, after: datetime) -> Iterator[datetime]:
        from croniter import CroniterBadDateError  # ~7 MiB: when used

        start = (after + min(self._recent(after))).replace(microsecond=0) - _SECOND
        cron, pending, last = self._ticks(start), list[datetime](), after
        while True:
            try:
                local = cron.get_next(datetime)
            except CroniterBadDateError:
                break
            tick = self._wall(local)
            horizon = local - max(self._recent(tick))
            while pending and pending[0] <= horizon:
                if (earliest := heapq.heappop(pending)) > last:
                    last = earliest
                    yield earliest
            if tick > last:
                heapq.heappush(pending, tick)
        yield from sorted(tick for tick in set(pending) if tick > last)

    def _previous_wall(self, until: datetime) -> datetime | None:
        from croniter import CroniterBadDateError  # ~7 MiB: when used

        start = (until + max(self._recent(until))).replace(microsecond=0) + _SECOND
        cron, best = self._ticks(start), None
        while True:
            try:
                local = cron.get_prev(datetime)
            except CroniterBadDateError:
                return best
            tick = self._wall(local)
            if best is not None and local - min(self._recent(tick)) <= best:
                return best  # this and earlier wall-clock times fire no later than best
            if tick <= until and (best is None or tick > best):
                best = tick

    def _wall(self, local: datetime) -> datetime:
        """fold=0: a repeated time's first occurrence; a skipped time shifted by the gap."""
        return local.replace(tzinfo=self.timezone).astimezone(UTC).replace(tzinfo=None)

    def _recent(self, moment: datetime) -> tuple[timedelta, timedelta]:
        """The offset at ``moment`` and, if it changed less than its change ago, the one before.

        A change of D moves fixed-time ticks up to D from ``wall clock - offset``.
        """
        now, before = self._offset(moment), self._offset(moment, -_DAY)
        if before != now and self._offset(moment, -abs(now - before)) == before:
            return now, before
        return now, now

    def _offset(self, moment: datetime, delta: timedelta = timedelta(0)) -> timedelta:
        with contextlib.suppress(OverflowError):
            moment += delta
        return moment.replace(tzinfo=UTC).astimezone(self.timezone).utcoffset() or timedelta(0)


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"an aware datetime is required, got naive {moment!r}")
    return moment.astimezone(UTC).replace(tzinfo=None)


@functools.cache
def _zone_names() -> dict[str, str]:
    return {name.lower(): name for name in available_timezones()}


def _zone(word: str) -> tzinfo | None:
    if word in ("Z", "z"):  # fugit's name for UTC
        word = "UTC"
    if offset := _OFFSET.fullmatch(word):  # fugit's fixed offsets: no daylight saving
        sign = -1 if offset[1] == "-" else 1
        return fixed_offset(sign * timedelta(hours=int(offset[2]), minutes=int(offset[3])), word)
    try:
        return ZoneInfo(_zone_names().get(word.lower(), word))
    except (ZoneInfoNotFoundError, ValueError):
        return None


def parse_schedule(text: str) -> Schedule:
    """Parse a cron expression, macro or English schedule (see the module doc)."""
    words = text.split()
    english = bool(words) and words[0].lower() in ("every", "at", "from", "on")
    words, zone = _take_zone(words, anywhere=english)
    body = " ".join(words)
    try:
        if not words:
            raise NotUnderstoodError("it is empty")
        if zone is None:
            for word in words if english else words[-1:]:
                if "/" in word and re.search("[a-z]", word, re.I):
                    raise NotUnderstoodError(f"unknown time zone {word!r}")
                if re.fullmatch(r"[+-]\d\d?:?\d\d", word):
                    raise NotUnderstoodError(
                        f"unknown time zone offset {word!r} (+HH:MM or +HHMM, from -14:00 to "
                        "+14:00, the minutes 00, 15, 30 or 45)"
                    )
        if english:
            cron = english_to_cron(body)
        elif words[0].startswith("@"):
            if words[0].lower() not in _MACROS or len(words) > 1:
                raise NotUnderstoodError(f"unknown macro {body!r}")
            cron = _MACROS[words[0].lower()]
        elif words[0].lower() == SECONDS_LAST:
            if len(words) != 7 or not _valid(" ".join(words[1:])):
                raise NotUnderstoodError(
                    f"{SECONDS_LAST!r} is followed by a cron of 6 fields whose last is the "
                    f"seconds ('{SECONDS_LAST} 0 9 * * * 30'), got {' '.join(words[1:])!r}"
                )
            cron = " ".join(words[1:])
        elif len(words) in (5, 6):
            if len(words) == 6:  # fugit's (Solid Queue's) order, seconds first: croniter's order
                words = [*words[1:], words[0]]
            cron = " ".join(words)
            if not _valid(cron):
                _split(cron)  # says what is wrong in fugit's day fields, if that is it
                raise NotUnderstoodError(f"{body!r} is not a valid cron expression")
        else:
            raise NotUnderstoodError(
                f"a cron expression has 5 or 6 fields, {body!r} has {len(words)}"
            )
        return Schedule(text, cron, zone or ZoneInfo("UTC"))
    except NotUnderstoodError as exc:
        raise ConfigurationError(f"cannot understand schedule {text!r}: {exc}. {_FORMS}") from None
    except ConfigurationError as exc:
        raise ConfigurationError(f"{exc}. {_FORMS}") from None


def _take_zone(words: list[str], *, anywhere: bool) -> tuple[list[str], tzinfo | None]:
    """The words without the time zone (and an ``in``/``on`` before it), and the zone.

    A cron or macro has its zone last; English may have it anywhere, as fugit reads
    ``at 7am Asia/Seoul every day``.
    """
    indexes = reversed(range(len(words))) if anywhere else range(len(words) - 1, len(words))
    for index in indexes:
        zone = _zone(words[index]) if index >= 0 else None
        if zone is not None:
            rest = words[:index] + words[index + 1 :]
            if index > 1 and words[index - 1].lower() in ("in", "on"):
                del rest[index - 1]
            return rest, zone
    return words, None


# -- fugit's day fields ----------------------------------------------------------------------------
#
# croniter matches the standard day fields (and L, 5#2 alone); fugit (Fugit::Cron, 1.11) also
# reads days counted from the end of the month, the n-th (last) weekday of a month next to other
# days, every n-th week and '&'.  A cron using any of these (or '#' at all) is walked by croniter
# with both day fields '*', its days being filtered here with fugit's rules.

_WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTHDAY = r"-?(?:3[01]|[12]\d|0?[1-9])|last|l"
_MONTHDAY_ITEM = re.compile(rf"(?:\*|({_MONTHDAY})(?:-({_MONTHDAY}))?)?(?:/(\d\d?))?", re.I)
_WEEKDAY = r"[0-7]|sun|mon|tue|wed|thu|fri|sat"
_WEEKDAY_ITEM = re.compile(rf"(?:\*|({_WEEKDAY})(?:-({_WEEKDAY}))?)?(?:/(\d\d?))?", re.I)
_WEEKDAY_HASH = re.compile(rf"({_WEEKDAY})#(-?[1-5]|last|l)", re.I)
_WEEKDAY_MODULO = re.compile(rf"({_WEEKDAY})%(\d+)(?:\+(\d+))?", re.I)
_NEGATIVE_DAY = re.compile(r"(?:^|[,-])-\d|last", re.I)
_STEP_FROM_A_DAY = re.compile(rf"(?:^|,)(?:{_WEEKDAY})/", re.I)
_REFERENCE = date(2019, 1, 1)  # fugit's week 1 (a Tuesday)
_HORIZON = 28 * 366  # days searched for the next matching day (a 28-year calendar cycle)


def _fugit_days(monthday: str, weekday: str) -> bool:
    """Whether the day fields use an extension of fugit's that croniter lacks, or a step from a
    day of the week, which fugit reads differently (``1/2`` is Monday alone, not 1,3,5)."""
    return (
        "&" in monthday + weekday
        or "%" in weekday
        or "#" in weekday  # croniter lacks #-1 and #L, and mixing mon#2 with other days
        or _STEP_FROM_A_DAY.search(weekday) is not None
        or _NEGATIVE_DAY.search(monthday) is not None
    )


def _split(cron: str) -> tuple[str, _Days | None]:
    """The cron croniter walks, and fugit's day rule when the day fields need one."""
    fields = cron.split()
    if len(fields) not in (5, 6):
        raise NotUnderstoodError(f"a cron expression has 5 or 6 fields, {cron!r} has {len(fields)}")
    monthday, weekday = fields[2], fields[4]
    if not _fugit_days(monthday, weekday):
        return cron, None
    months = None
    if fields[3] != "*":
        from croniter import croniter  # ~7 MiB: when used

        if croniter.is_valid(f"0 0 * {fields[3]} *"):
            expanded = croniter(f"0 0 * {fields[3]} *").expanded[3]
            months = None if expanded == ["*"] else frozenset(int(m) for m in expanded)
    days = _Days(
        monthdays=_monthdays(monthday.replace("&", "")),
        weekdays=_weekdays(weekday.replace("&", "")),
        months=months,
        both="&" in monthday + weekday,
    )
    return " ".join([*fields[:2], "*", fields[3], "*", *fields[5:]]), days


def _valid(cron: str) -> bool:
    from croniter import croniter  # ~7 MiB: when used

    try:
        base, _ = _split(cron)
    except NotUnderstoodError:
        return False
    return bool(croniter.is_valid(base))


def _expand(low: int, high: int, start: int | None, end: int | None, step: int | None) -> list[int]:
    """fugit's ``expand`` and ``range``: ``start-end/step``, wrapping past ``high`` (``25-5``);
    a range of negative values counts from the end (``-7--1``)."""
    if step is not None and end is None:
        end = high
    if start is None and end is None and step is None:
        return []
    if start is not None and end is None:
        return [start]
    step = step or 1
    start = low if start is None else start
    end = high if end is None or (end < 0 < start) else end
    if (start < 0 < end) or (end < 0 < start):
        raise NotUnderstoodError(
            f"a range of days counts from the start or from the end, not from {start} to {end}"
        )
    first, last = (-high, -1) if start < 0 else (low, high)
    values, current = [], start
    while True:
        values.append(current)
        if current == end or len(values) > 2 * high:
            break
        current += 1
        if current > last:
            current = first
            end = end - last - 1 if end > last else end
    return list(dict.fromkeys(values[::step]))


def _monthdays(field: str) -> frozenset[int] | None:
    """Days of the month, negative ones from its end (-1: the last); None for any day."""
    days: list[int] = []
    for item in field.split(","):
        match = _MONTHDAY_ITEM.fullmatch(item)
        if not item or match is None:
            raise NotUnderstoodError(
                f"{item!r} is not a day of the month (1 to 31, L or last, -1 to -31 from the end, "
                "ranges and steps of them)"
            )
        start, end = (None if v is None else _monthday(v) for v in match.group(1, 2))
        step = int(match[3]) if match[3] else None
        if item.startswith("*") and step in (None, 1):
            return None
        days += _expand(1, 31, start, end, step)
    return frozenset(days) if days and set(days) != set(range(1, 32)) else None


def _monthday(text: str) -> int:
    return -1 if text.lower() in ("l", "last") else int(text)


def _weekdays(field: str) -> tuple[_Weekday, ...] | None:
    """fugit's weekdays: each a day (0 Sunday to 6), alone, with ``#n`` (n-th in the month, from
    its end when negative) or with ``%n+k`` (weeks whose number modulo n is k)."""
    found: list[_Weekday] = []
    for item in field.split(","):
        if match := _WEEKDAY_HASH.fullmatch(item):
            nth = -1 if match[2].lower() in ("l", "last") else int(match[2])
            if nth == 0:
                raise NotUnderstoodError(f"{item!r}: '#' is followed by 1 to 5, or -1 to -5")
            found.append((_weekday(match[1]), nth, None))
        elif match := _WEEKDAY_MODULO.fullmatch(item):
            modulo = int(match[2])
            if modulo < 1:
                raise NotUnderstoodError(
                    f"{item!r}: '%' is followed by a number of weeks, 1 or more"
                )
            found.append((_weekday(match[1]), None, (modulo, int(match[3] or 0))))
        elif (match := _WEEKDAY_ITEM.fullmatch(item)) and item:
            start, end = (None if v is None else _weekday(v) for v in match.group(1, 2))
            step = int(match[3]) if match[3] else None
            if step is not None:  # as fugit: '1/2' is Monday alone, '*/2' every other day
                first = start or 0
                last = end if end is not None else (start if start is not None else 6)
                found += [(day % 7, None, None) for day in range(first, last + 1, max(step, 1))]
            elif end is not None:
                last = end + 7 if start is not None and start > end else end
                found += [(day % 7, None, None) for day in range(start or 0, last + 1)]
            elif start is not None:
                found.append((start % 7, None, None))
            else:
                return None  # '*'
        else:
            raise NotUnderstoodError(
                f"{item!r} is not a day of the week (0 to 7 or sun to sat, ranges and steps of "
                "them, fri#2 or fri#-1 for the second or the last Friday of the month, tue%2 or "
                "tue%2+1 for every other Tuesday)"
            )
    return tuple(dict.fromkeys(found)) or None


def _weekday(text: str) -> int:
    lowered = text.lower()
    return _WEEKDAY_NAMES.index(lowered) if lowered in _WEEKDAY_NAMES else int(text) % 7


# (weekday 0-6, n-th in the month or None, (modulo, offset) or None)
_Weekday = tuple[int, int | None, tuple[int, int] | None]


@dataclass(frozen=True)
class _Days:
    """fugit's reading of the day fields (``Fugit::Cron#day_match?``)."""

    monthdays: frozenset[int] | None  # None: any
    weekdays: tuple[_Weekday, ...] | None  # None: any
    months: frozenset[int] | None  # the month field, to look for the next day quickly
    both: bool  # '&': the day of the month AND the day of the week (else OR, when both are set)

    def match(self, day: date) -> bool:
        if self.months is not None and day.month not in self.months:
            return False
        if self.monthdays is not None and self.weekdays is not None:
            if self.both:
                return self._monthday(day) and self._weekday(day)
            return self._monthday(day) or self._weekday(day)
        return self._monthday(day) and self._weekday(day)

    def _monthday(self, day: date) -> bool:
        if self.monthdays is None:
            return True
        if day.day in self.monthdays:
            return True
        after = (day.replace(day=28) + timedelta(days=4)).replace(day=1) - day  # to the 1st next
        return -after.days in self.monthdays  # the last day is -1

    def _weekday(self, day: date) -> bool:
        if self.weekdays is None:
            return True
        weekday = day.isoweekday() % 7
        for wanted, nth, modulo in self.weekdays:
            if wanted != weekday:
                continue
            if nth is None and modulo is None:
                return True
            if nth is not None:
                last = (day.replace(day=28) + timedelta(days=4)).replace(day=1) - _DAY
                if nth == ((day.day - 1) // 7 + 1 if nth > 0 else -((last.day - day.day) // 7 + 1)):
                    return True
            elif modulo is not None:
                # fugit's "reference week": 1 on 2019-01-01's week (Tuesday to Monday).  fugit
                # (et-orbi) measures it in seconds between noons, which daylight saving moves
                # across a week's boundary on Tuesdays; pgjobs counts calendar days.
                week = (day - _REFERENCE).days // 7 + 1
                if week % modulo[0] == modulo[1] % modulo[0]:
                    return True
        return False

    def after(self, day: date) -> date | None:
        """The first day after ``day`` that matches (None: none in the next 28 years)."""
        return self._search(day, 1)

    def before(self, day: date) -> date | None:
        return self._search(day, -1)

    def _search(self, day: date, direction: int) -> date | None:
        with contextlib.suppress(OverflowError):  # the calendar's ends
            for offset in range(1, _HORIZON):
                if self.match(candidate := day + timedelta(days=direction * offset)):
                    return candidate
        return None


class _DayFiltered:
    """croniter's ``get_next``/``get_prev`` over the cron with any day, keeping only the days
    :class:`_Days` accepts (from a day it refuses, croniter restarts at the next day it accepts)."""

    def __init__(self, base: str, start: datetime, days: _Days) -> None:
        from croniter import croniter  # ~7 MiB: when used

        self.base, self.days, self.cron = base, days, croniter(base, start)

    def get_next(self, ret_type: type[datetime] = datetime) -> datetime:
        from croniter import CroniterBadDateError, croniter  # ~7 MiB: when used

        while True:
            tick: datetime = self.cron.get_next(datetime)
            if self.days.match(tick.date()):
                return tick
            day = self.days.after(tick.date())
            if day is None:
                raise CroniterBadDateError("no matching day")
            self.cron = croniter(self.base, datetime.combine(day, time()) - _SECOND)

    def get_prev(self, ret_type: type[datetime] = datetime) -> datetime:
        from croniter import CroniterBadDateError, croniter  # ~7 MiB: when used

        while True:
            tick: datetime = self.cron.get_prev(datetime)
            if self.days.match(tick.date()):
                return tick
            day = self.days.before(tick.date())
            if day is None:
                raise CroniterBadDateError("no matching day")
            self.cron = croniter(self.base, datetime.combine(day + _DAY, time()))
