"""English schedules in fugit's grammar (what Solid Queue reads), each turned into one cron.

:func:`english_to_cron` gives the cron in croniter's order (seconds, when present, *last*) with
the meaning fugit 1.11 (``Fugit::Nat``) gives the same words; ``docs/recurring.md`` has the table
of forms.  The text is lower-cased first, except ``M`` (months) against ``m`` (minutes) in
``every 4M``; the time zone has been taken off by :func:`pgjobs.config.schedules.parse_schedule`.

A text is a sequence of clauses, in any order:

- ``every`` + a unit with an optional count (``5m``, ``15 sec``, ``2 hours``, ``day``, ``3
  months``; ``week`` and ``year`` only once), day names, lists and ranges of them (``mon, wed``,
  ``Mon to Thu``, ``mon-fri``), ``weekday`` (or, beyond fugit, ``weekend``), or days of the month
  (``1st``, ``first``, ``last`` ... ``of the month``);
- ``at`` (or nothing) + times (``5``, ``five``, ``5pm``, ``five thirty pm``, ``16:30``, ``noon``,
  ``midnight``, ``12 midnight``, ``zero dark twenty``), ``minute 12``, ``second 10 and 40``, or a
  range of hours (``8am to 5pm``);
- ``on`` + ``day 2 and 5``, ``days 1,15``, ``the 1st and the last``, day names, ``minute 10``,
  ``the hour``, ``the minute``;
- ``from`` (or nothing) + ranges: ``Monday through Friday``, ``the 25th to the last``,
  ``8am to 5pm``;
- ``starting at`` / ``from`` + ``<unit> N`` after ``every <unit>``: the first value of the step.

Beyond fugit (which rejects them): ``mondays``, ``weekend``, ``of month``, ``mins``, ``hrs``,
``15:30:10``, lower-case zones.  Stricter than fugit (which accepts them with a surprising
meaning): ``13pm``, steps larger than their unit (``every 90 minutes`` is minute 0 for fugit),
``at <time>`` after ``every <n> seconds/minutes/hours``, ``at hour N`` (fugit ignores it).
Several times of day that one cron cannot hold (``every day at 8:30 and 18:45``: fugit gives two
crons, Solid Queue runs the first alone) are refused naming the crons they need.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["NotUnderstoodError", "english_to_cron"]


class NotUnderstoodError(ValueError):
    """A part of the schedule text that could not be understood."""


_UNITS = {
    alias: unit
    for unit, aliases in [
        ("second", "s sec secs"),
        ("minute", "m min mins"),
        ("hour", "h hr hrs"),
        ("day", "d"),
        ("week", ""),
        ("month", ""),
        ("year", ""),
    ]
    for alias in (unit, f"{unit}s", *aliases.split())
}
_STEP_MAX = {"second": 60, "minute": 60, "hour": 24, "day": 31, "month": 12, "week": 1, "year": 1}
_DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_WEEKDAY: dict[str, int] = {}
for _number, _name in enumerate(_DAY_NAMES):
    for _word in (_name, _name + "s", _name[:3]):
        _WEEKDAY[_word] = _number
_DAY_SETS = {"weekday": "1-5", "weekdays": "1-5", "weekend": "0,6", "weekends": "0,6"}
_ONES = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_TEENS = [
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen",
]  # fmt: skip
_MINUTE_WORDS = {word: number for number, word in enumerate(["zero", *_ONES, *_TEENS])}
for _tens, _word in zip((20, 30, 40, 50), ("twenty", "thirty", "forty", "fifty"), strict=True):
    _MINUTE_WORDS[_word] = _tens
    for _one, _unit in enumerate(_ONES, 1):
        _MINUTE_WORDS[f"{_word}-{_unit}"] = _tens + _one
_MINUTE_WORDS.update({"o'clock": 0, "hundred": 0})
_HOUR_WORDS = {word: n for word, n in _MINUTE_WORDS.items() if n <= 12 and "-" not in word}
_HOUR_WORDS.update({"oh": 0, "noon": 12, "midnight": 0})
_ORDINAL_WORDS = [
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
    "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth",
    "seventeenth", "eighteenth", "nineteenth", "twentieth", "twenty-first", "twenty-second",
    "twenty-third", "twenty-fourth", "twenty-fifth", "twenty-sixth", "twenty-seventh",
    "twenty-eighth", "twenty-ninth", "thirtieth", "thirty-first",
]  # fmt: skip
_AMPM = ("am", "pm", "noon", "midday", "midnight")
_SEPARATORS = (",", "and", "or")
_POINTS = {
    "minute": "minute", "minutes": "minute", "min": "minute", "mins": "minute",
    "second": "second", "seconds": "second", "sec": "second", "secs": "second",
}  # fmt: skip
_CLOCK = re.compile(r"(\d{1,2}):(\d\d)(?::(\d\d))?(am|pm)?")
_HOUR = re.compile(r"(\d{1,2})(am|pm)?")

Time = tuple[int, int, int]


@dataclass
class _Parts:
    """What the clauses said, before it becomes cron fields."""

    unit: str | None = None
    step: int = 1
    start: int | None = None
    weekdays: list[str] = field(default_factory=list)
    monthdays: list[str] = field(default_factory=list)
    times: list[Time] = field(default_factory=list)
    minutes: list[int] = field(default_factory=list)
    seconds: list[int] = field(default_factory=list)
    hours: tuple[int, int] | None = None
    on_the: str | None = None  # "hour" or "minute"


def english_to_cron(text: str) -> str:
    """The cron (croniter's order) for English ``text``; NotUnderstoodError saying why not."""
    text = re.sub(r"\b(\d*) ?M\b", lambda m: f"{m[1]} months", text).lower()
    text = re.sub(r"\b(\d+)(s|secs?|m|mins?|h|hrs?|d)\b", r"\1 \2", text.replace(",", " , "))
    tokens: list[str] = []
    for word in text.split():
        days = word.split("-")
        if len(days) == 2 and all(day in _WEEKDAY for day in days):
            tokens += [days[0], "-", days[1]]
        else:
            tokens.append(word)
    if not tokens or tokens[0] not in ("every", "at", "from", "on"):
        raise NotUnderstoodError(
            "English schedules start with 'every' (or 'at <time> every', 'from ... to ...')"
        )
    return _Parser(tokens).parse()


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens, self.at, self.parts = tokens, 0, _Parts()

    # -- tokens ---------------------------------------------------------------------------------

    def peek(self, ahead: int = 0) -> str:
        index = self.at + ahead
        return self.tokens[index] if index < len(self.tokens) else ""

    def take(self, *words: str) -> bool:
        if self.peek() in words:
            self.at += 1
            return True
        return False

    def separated(self, is_item: Callable[[int], bool]) -> bool:
        """Skip a separator (``,``, ``and``, ``or``, ``, and``) if an item follows it."""
        skip = 0
        while self.peek(skip) in _SEPARATORS:
            skip += 1
        if skip and is_item(skip):
            self.at += skip
            return True
        return False

    def rest(self) -> str:
        return " ".join(self.tokens[self.at :])

    # -- clauses --------------------------------------------------------------------------------

    def parse(self) -> str:
        while self.at < len(self.tokens):
            if self.take(","):
                continue
            if self.take("every"):
                self.every()
            elif self.take("on"):
                self.on()
            elif self.peek() in ("starting", "from") and self.peek(1) in (*_UNITS, "at"):
                self.at += 1
                self.take("at")
                self.starting()
            else:
                self.take("at", "from")
                self.at_objects()
        return _cron(self.parts)

    def every(self) -> None:
        parts, word = self.parts, self.peek()
        if word in _WEEKDAY or word in _DAY_SETS:
            parts.weekdays += self.weekdays()
            return
        if self.ordinal(0) is not None:
            start, days = self.at, self.ordinals()
            if self.take("day"):
                pass
            if self.take("of"):
                self.take("the", "each", "every")
                if self.take("month"):
                    parts.monthdays += days
                    return
            self.at = start
        match = re.fullmatch(r"\d+", word)
        count = int(word) if match else 1
        unit = _UNITS.get(self.peek(1 if match else 0))
        if unit is None or parts.unit is not None:
            raise NotUnderstoodError(
                f"{self.rest()!r} is not a unit (second, minute, hour, day, week, month, year), "
                "a day name (monday, mon-fri, weekday, weekend) or a day of the month (1st of "
                "the month)"
            )
        self.at += 2 if match else 1
        if not 1 <= count <= _STEP_MAX[unit]:
            most = _STEP_MAX[unit]
            allowed = f"1 to {most}" if most > 1 else "only 1: cron cannot skip"
            raise NotUnderstoodError(f"'every {count} {unit}s' is out of range ({allowed} {unit}s)")
        parts.unit, parts.step = unit, count

    def weekdays(self) -> list[str]:
        days: list[str] = []
        while True:
            word = self.tokens[self.at]
            self.at += 1
            if word in _DAY_SETS:
                days.append(_DAY_SETS[word])
            elif self.peek() in ("to", "through", "-") and self.peek(1) in _WEEKDAY:
                days.append(f"{_WEEKDAY[word]}-{_WEEKDAY[self.peek(1)]}")
                self.at += 2
            else:
                days.append(str(_WEEKDAY[word]))
            if not self.separated(lambda skip: self.peek(skip) in (*_WEEKDAY, *_DAY_SETS)):
                return days

    def ordinal(self, ahead: int) -> str | None:
        word = self.peek(ahead)
        if word == "last":
            return "L"
        if word in _ORDINAL_WORDS:
            return str(_ORDINAL_WORDS.index(word) + 1)
        if match := re.fullmatch(r"(\d{1,2})(?:st|nd|rd|th)", word):
            if not 1 <= int(match[1]) <= 31:
                raise NotUnderstoodError(
                    f"{word!r} is not a day of the month (write 1st, 15th or last)"
                )
            return match[1].lstrip("0")
        return None

    def ordinals(self) -> list[str]:
        """``1st``, ``first and the 15th``, ``25th to the last``."""
        days: list[str] = []
        while True:
            self.take("the")
            day = self.ordinal(0)
            if day is None:
                raise NotUnderstoodError(f"{self.rest()!r} is not a day of the month (1st, last)")
            self.at += 1
            if self.peek() == "to" and (self.ordinal(1) or self.ordinal(2)) is not None:
                self.at += 1
                self.take("the")
                day = f"{day}-{self.ordinal(0)}"
                self.at += 1
            days.append(day)
            if not self.separated(
                lambda skip: (self.ordinal(skip) or self.ordinal(skip + 1)) is not None
            ):
                return days

    def numbers(self, what: str, low: int, high: int) -> list[int]:
        found: list[int] = []
        while True:
            word = self.peek()
            if not word.isdigit() or not low <= int(word) <= high:
                raise NotUnderstoodError(f"{what} {word!r} is not a number from {low} to {high}")
            found.append(int(word))
            self.at += 1
            if not self.separated(lambda skip: self.peek(skip).isdigit()):
                return found

    def on(self) -> None:
        parts = self.parts
        while True:
            word = self.peek()
            if self.take("day", "days"):
                parts.monthdays += map(str, self.numbers("day of the month", 1, 31))
            elif word in _WEEKDAY or word in _DAY_SETS:
                parts.weekdays += self.weekdays()
            elif self.take("minute", "minutes"):
                parts.minutes += self.numbers("minute", 0, 59)
                while self.peek() in _SEPARATORS and self.peek(1) == "minute":
                    self.at += 2
                    parts.minutes += self.numbers("minute", 0, 59)
            elif word == "the" and self.peek(1) in ("hour", "minute"):
                parts.on_the = self.peek(1)
                self.at += 2
            elif word == "the" or self.ordinal(0) is not None:
                parts.monthdays += self.ordinals()
            else:
                raise NotUnderstoodError(
                    f"'on {self.rest()}': after 'on' comes 'day 2', 'days 1,15', 'the 1st', a "
                    "day name, 'minute 10', 'the hour' or 'the minute'"
                )
            if not self.take("and"):
                return

    def starting(self) -> None:
        unit = _UNITS.get(self.peek())
        if unit is None or unit != self.parts.unit or unit in ("week", "year"):
            raise NotUnderstoodError(
                f"'starting at {self.rest()}': the unit must be that of 'every' "
                "('every 15 minutes starting at minute 1')"
            )
        self.at += 1
        bounds = {"second": 59, "minute": 59, "hour": 23, "day": 31, "month": 12}
        low = 1 if unit in ("day", "month") else 0
        self.parts.start = self.numbers(unit, low, bounds[unit])[0]

    def at_objects(self) -> None:
        parts = self.parts
        while True:
            word = self.peek()
            if (point := _POINTS.get(word)) is not None and self.peek(1).isdigit():
                self.at += 1
                if point == "minute":
                    parts.minutes += self.numbers("minute", 0, 59)
                else:
                    parts.seconds += self.numbers("second", 0, 59)
            elif word in ("hour", "hours", "h") and self.peek(1).isdigit():
                raise NotUnderstoodError(
                    f"'{word} {self.peek(1)}' is not understood (fugit ignores it): write the "
                    "time of day ('at 5am') or a range of hours ('8am to 5pm')"
                )
            elif word in _WEEKDAY and self.peek(1) in ("to", "through", "-"):
                parts.weekdays += self.weekdays()
            elif word == "the" or self.ordinal(0) is not None:
                parts.monthdays += self.ordinals()
            else:
                time = self.time()
                if self.take("to", "through"):
                    end = self.time()
                    if (time[1], time[2]) != (end[1], end[2]):
                        raise NotUnderstoodError(
                            f"a range of hours goes from one whole hour to another, the minutes "
                            f"of {_clock(time)} and {_clock(end)} differ"
                        )
                    parts.hours = (time[0], end[0])
                else:
                    parts.times.append(time)
            if not self.separated(self.starts_at_object):
                return

    def starts_at_object(self, ahead: int) -> bool:
        word = self.peek(ahead)
        return bool(
            word in _POINTS
            or word in _HOUR_WORDS
            or word in _WEEKDAY
            or word == "the"
            or _CLOCK.fullmatch(word)
            or _HOUR.fullmatch(word)
            or self.ordinal(ahead) is not None
        )

    def time(self) -> Time:
        word, start, rest = self.peek(), self.at, self.rest()
        self.at += 1
        second = 0
        if match := _CLOCK.fullmatch(word):
            hour, minute, second, ampm = int(match[1]), int(match[2]), int(match[3] or 0), match[4]
        elif match := _HOUR.fullmatch(word):
            hour, minute, ampm = int(match[1]), 0, match[2]
        elif word in _HOUR_WORDS:
            hour, minute, ampm = _HOUR_WORDS[word], 0, None
            self.take("dark")
            if self.peek() in _MINUTE_WORDS and word not in ("noon", "midnight"):
                minute = _MINUTE_WORDS[self.peek()]
                self.at += 1
        else:
            raise NotUnderstoodError(
                f"{rest!r} is not understood: expected a time of day (5pm, 5:30pm, 17:30, "
                "five, noon, midnight), 'minute 12', 'second 10', a day or a time zone"
            )
        if ampm is None and self.peek() in _AMPM:
            ampm = self.peek()
            self.at += 1
        if ampm in ("am", "pm") and not 1 <= hour <= 12:
            hour = 99
        elif (ampm == "pm" and hour < 12) or (ampm == "midnight" and hour == 12):
            hour += 12
        elif ampm == "am" and hour == 12:
            hour = 0
        if hour == 24:  # fugit's hour 24 ('12 midnight', '24:00') is hour 0
            hour = 0
        if hour > 23 or minute > 59 or second > 59:
            text = " ".join(self.tokens[start : self.at])
            raise NotUnderstoodError(
                f"{text!r} is not a time of day (write 3pm, 3:30pm, 15:30, 15:30:10, noon or "
                "midnight)"
            )
        return hour, minute, second


def _clock(time: Time) -> str:
    return f"{time[0]}:{time[1]:02}"


def _cron(parts: _Parts) -> str:
    """The cron fields from the clauses, with fugit's defaults for what they leave out."""
    unit, step, start = parts.unit, parts.step, parts.start
    every = ("*" if step == 1 else f"*/{step}") if start is None else f"{start}/{step}"
    if unit in ("second", "minute", "hour") and parts.times:
        raise NotUnderstoodError(f"'at <time>' goes with days, not with {unit}s")
    if parts.times and (parts.minutes or parts.hours or parts.on_the):
        raise NotUnderstoodError("give either times of day or minutes and a range of hours")
    second = ",".join(map(str, sorted(set(parts.seconds)))) or "0"
    minute = ",".join(map(str, sorted(set(parts.minutes))))
    hour, groups = "*", list[tuple[str, str, str]]()
    if parts.hours is not None:  # as fugit: '8am to 5pm' is 8-17 by the hour, 8-16 by the minute
        first, last = parts.hours
        by_minute = unit in ("second", "minute") or minute or parts.on_the == "minute"
        last -= 1 if by_minute and parts.on_the != "hour" else 0
        hour = f"{first}-{last}" if first != last else str(first)
    if unit == "second":
        second, minute = every, "*"
    elif unit == "minute":
        minute = every
    elif unit == "hour":
        hour = every if parts.hours is None else hour
    elif parts.times:
        groups = _times(parts.times)
        minute, hour, second = groups[0]
    elif parts.on_the == "minute" and not minute:
        minute = "*"
    elif parts.hours is None and not minute:
        hour = "0"
    monthday = ",".join(_sorted(parts.monthdays)) or (every if unit == "day" else "")
    weekday = ",".join(_sorted(parts.weekdays)) or ("0" if unit == "week" else "")
    month = {"month": every, "year": "1"}.get(unit or "", "*")
    if unit in ("month", "year") and not monthday and not weekday:
        monthday = "1"
    days = f"{monthday or '*'} {month} {weekday or '*'}"
    if parts.times and len(groups) > 1:
        # As they are written in recurring.yml: seconds first (fugit's order), when there are.
        crons = [("" if s == "0" else f"{s} ") + f"{m} {h} {days}" for m, h, s in groups]
        raise NotUnderstoodError(
            "these times of day need more than one cron (fugit would silently keep the first); "
            "configure one recurring task per cron: " + ", ".join(repr(c) for c in crons)
        )
    return f"{minute or '0'} {hour} {days}" + ("" if second == "0" else f" {second}")


def _times(times: list[Time]) -> list[tuple[str, str, str]]:
    """(minutes, hours, seconds) per cron for several times of day, grouped as fugit does: the
    minutes that share the same hours make one cron (18:00, 18:15, 20:00, 20:15: ``0,15 18,20``)."""
    hours_of: dict[tuple[int, int], set[int]] = {}
    for hour, minute, second in times:
        hours_of.setdefault((minute, second), set()).add(hour)
    groups: dict[tuple[tuple[int, ...], int], list[int]] = {}
    for (minute, second), hours in sorted(hours_of.items()):
        groups.setdefault((tuple(sorted(hours)), second), []).append(minute)
    return [
        (",".join(map(str, minutes)), ",".join(map(str, hours)), str(second))
        for (hours, second), minutes in groups.items()
    ]


def _sorted(items: list[str]) -> list[str]:
    """Values in order, ranges by their first value, ``L`` last (as fugit writes them)."""

    def key(item: str) -> tuple[int, str]:
        head = item.split("-", maxsplit=1)[0]
        return (int(head) if head.isdigit() else 99, item)

    return sorted(dict.fromkeys(items), key=key)
