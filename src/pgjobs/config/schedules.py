"""Recurring-task schedules: parse what the user wrote and compute when it fires.

Accepted forms (``parse_schedule``), each with an optional IANA time zone (``America/New_York``,
``UTC``, ``Z``; after ``in``/``on`` too, as fugit allows): last after a cron or macro, anywhere
in English (``at 7am Asia/Seoul every day``).  Without a zone the schedule runs in UTC.

- cron with 5 fields (``*/30 * * * *``) or 6 fields with the seconds **first**, as fugit (Solid
  Queue) reads them: ``*/30 * * * * *`` is every 30 seconds.  croniter's order, seconds last,
  must be asked for: ``seconds-last 0 9 * * * 30`` is 09:00:30.  Macros: ``@hourly @daily
  @midnight @weekly @monthly @yearly @annually``.
- English in fugit's grammar (:mod:`pgjobs.config.schedules_nat`): ``every 5m``, ``every hour at
  minute 12``, ``every weekday at five pm``, ``every month on the 1st at 3am``, ``at noon every
  day``, ``every Mon to Thu, 18:20``...  Each becomes one cron with fugit's meaning, so steps
  that do not divide their unit are *calendar* steps, not true intervals: ``every 7 minutes`` is
  ``*/7 * * * *`` (:00, :07 ... :56, then :00 again, 4 minutes later); ``every 3 days`` is
  ``0 0 */3 * *`` (the 1st, 4th ... 31st, then the 1st of the next month).  Times of day that one
  cron cannot hold (``every day at 9am and 3:30pm``) are rejected naming the crons they need.

``Schedule.cron`` is always in croniter's order (seconds, when present, last).

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
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pgjobs.config.schedules_nat import NotUnderstoodError, english_to_cron
from pgjobs.errors import ConfigurationError

__all__ = ["SECONDS_LAST", "Schedule", "parse_schedule"]

_SECOND = timedelta(seconds=1)
_DAY = timedelta(days=1)
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
    "of them may end with an IANA time zone: 'every day at 8am America/New_York'."
)


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: ``cron`` matched on the wall clock of ``timezone`` (see module doc)."""

    source: str
    cron: str
    timezone: ZoneInfo = field(default=ZoneInfo("UTC"))
    _every_hour: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from croniter import CroniterBadDateError, croniter  # ~7 MiB: when used

        fields = self.cron.split()
        if len(fields) not in (5, 6) or not croniter.is_valid(self.cron):
            raise ConfigurationError(f"invalid cron expression {self.cron!r} in {self.source!r}")
        try:
            croniter(self.cron, datetime(2000, 1, 1)).get_next(datetime)
        except CroniterBadDateError:
            raise ConfigurationError(
                f"cron expression {self.cron!r} in {self.source!r} never matches a date"
            ) from None
        object.__setattr__(self, "_every_hour", croniter(self.cron).expanded[1] == ["*"])

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
        from croniter import CroniterBadDateError, croniter  # ~7 MiB: when used

        start, offset = after, self._offset(after)
        while True:
            cron = croniter(self.cron, (start + offset).replace(microsecond=0))
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
        from croniter import CroniterBadDateError, croniter  # ~7 MiB: when used

        offset = self._offset(until)
        while True:
            cron = croniter(self.cron, (until + offset).replace(microsecond=0) + _SECOND)
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
        from croniter import CroniterBadDateError, croniter  # ~7 MiB: when used

        start = (after + min(self._recent(after))).replace(microsecond=0) - _SECOND
        cron, pending, last = croniter(self.cron, start), list[datetime](), after
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
        from croniter import CroniterBadDateError, croniter  # ~7 MiB: when used

        start = (until + max(self._recent(until))).replace(microsecond=0) + _SECOND
        cron, best = croniter(self.cron, start), None
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


def _zone(word: str) -> ZoneInfo | None:
    if word in ("Z", "z"):  # fugit's name for UTC
        word = "UTC"
    try:
        return ZoneInfo(_zone_names().get(word.lower(), word))
    except (ZoneInfoNotFoundError, ValueError):
        return None


def parse_schedule(text: str) -> Schedule:
    """Parse a cron expression, macro or English schedule (see the module doc)."""
    from croniter import croniter  # ~7 MiB: when used

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
        if english:
            cron = english_to_cron(body)
        elif words[0].startswith("@"):
            if words[0].lower() not in _MACROS or len(words) > 1:
                raise NotUnderstoodError(f"unknown macro {body!r}")
            cron = _MACROS[words[0].lower()]
        elif words[0].lower() == SECONDS_LAST:
            if len(words) != 7 or not croniter.is_valid(" ".join(words[1:])):
                raise NotUnderstoodError(
                    f"{SECONDS_LAST!r} is followed by a cron of 6 fields whose last is the "
                    f"seconds ('{SECONDS_LAST} 0 9 * * * 30'), got {' '.join(words[1:])!r}"
                )
            cron = " ".join(words[1:])
        elif len(words) in (5, 6):
            if len(words) == 6:  # fugit's (Solid Queue's) order, seconds first: croniter's order
                words = [*words[1:], words[0]]
            cron = " ".join(words)
            if not croniter.is_valid(cron):
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


def _take_zone(words: list[str], *, anywhere: bool) -> tuple[list[str], ZoneInfo | None]:
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
