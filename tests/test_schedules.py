"""Parsing recurring-task schedules and computing their ticks (no database)."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from pgjobs.config.schedules import Schedule, parse_schedule
from pgjobs.errors import ConfigurationError

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def utc(*fields: int) -> datetime:
    year, month, day, hour, minute, second, microsecond = (*fields, 0, 0, 0, 0)[:7]
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


def local_day(zone: ZoneInfo, year: int, month: int, day: int) -> tuple[datetime, datetime]:
    """The real instants at which a local calendar day starts and ends."""
    start = datetime(year, month, day, tzinfo=zone)
    return start, datetime.combine(start.date() + timedelta(days=1), start.timetz())


@pytest.mark.parametrize(
    ("text", "cron"),
    [
        ("every second", "* * * * * *"),
        ("every 10 seconds", "* * * * * */10"),
        ("every 15s", "* * * * * */15"),
        ("every minute", "* * * * *"),
        ("every 1 minute", "* * * * *"),
        ("every 5 minutes", "*/5 * * * *"),
        ("every 7 minutes", "*/7 * * * *"),
        ("every hour", "0 * * * *"),
        ("every 2 hours", "0 */2 * * *"),
        ("every 12 hours", "0 */12 * * *"),
        ("every day", "0 0 * * *"),
        ("every 3 days", "0 0 */3 * *"),
        ("every day at 3pm", "0 15 * * *"),
        ("every day at 3:30pm", "30 15 * * *"),
        ("every day at 3 pm", "0 15 * * *"),
        ("every day at 15:30", "30 15 * * *"),
        ("every day at 15:30:10", "30 15 * * * 10"),
        ("every day at 12am", "0 0 * * *"),
        ("every day at 12pm", "0 12 * * *"),
        ("every day at noon", "0 12 * * *"),
        ("every day at midnight", "0 0 * * *"),
        ("at 5pm every day", "0 17 * * *"),
        ("at midnight every monday", "0 0 * * 1"),
        ("every monday at 9am", "0 9 * * 1"),
        ("every mondays at 9am", "0 9 * * 1"),
        ("every sunday", "0 0 * * 0"),
        ("every tue at 9am", "0 9 * * 2"),
        ("every monday and friday at 9am", "0 9 * * 1,5"),
        ("every mon, wed, fri at noon", "0 12 * * 1,3,5"),
        ("every weekday at 9:30", "30 9 * * 1-5"),
        ("every weekend at 10am", "0 10 * * 0,6"),
        ("every saturday and sunday", "0 0 * * 0,6"),
        ("every 1st of month at 8am", "0 8 1 * *"),
        ("every 15th of the month", "0 0 15 * *"),
        ("every 1st and 15th of the month at 6:15", "15 6 1,15 * *"),
        ("every last day of the month", "0 0 L * *"),
        ("every week", "0 0 * * 0"),
        ("every month", "0 0 1 * *"),
        ("every 3 months", "0 0 1 */3 *"),
        ("every year", "0 0 1 1 *"),
        ("every month at 8am", "0 8 1 * *"),
        ("every day at 9am, 3pm", "0 9,15 * * *"),
        ("every day at 9am and 3pm", "0 9,15 * * *"),
        ("every day at 3pm and 9am", "0 9,15 * * *"),
        ("Every Day At 3PM", "0 15 * * *"),
        ("  every   day  at  3pm ", "0 15 * * *"),
    ],
)
def test_english_forms_parse_to_cron(text: str, cron: str) -> None:
    schedule = parse_schedule(text)
    assert schedule.cron == cron
    assert schedule.source == text
    assert schedule.timezone == ZoneInfo("UTC")


@pytest.mark.parametrize(
    ("text", "cron"),
    [
        ("*/30 * * * *", "*/30 * * * *"),
        ("0  9 * *   1-5", "0 9 * * 1-5"),
        ("30 0 9 * * *", "0 9 * * * 30"),
        ("seconds-last 0 9 * * * 30", "0 9 * * * 30"),
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_cron_and_macros(text: str, cron: str) -> None:
    assert parse_schedule(text).cron == cron


@pytest.mark.parametrize(
    ("text", "cron", "zone"),
    [
        ("every day at 8am America/New_York", "0 8 * * *", "America/New_York"),
        ("every day at 8am america/new_york", "0 8 * * *", "America/New_York"),
        ("every day at 6 pm in Asia/Tokyo", "0 18 * * *", "Asia/Tokyo"),
        ("every hour UTC", "0 * * * *", "UTC"),
        ("every hour Etc/UTC", "0 * * * *", "Etc/UTC"),
        ("*/15 * * * * Europe/Berlin", "*/15 * * * *", "Europe/Berlin"),
        ("@daily Europe/Berlin", "0 0 * * *", "Europe/Berlin"),
    ],
)
def test_time_zone_suffix(text: str, cron: str, zone: str) -> None:
    schedule = parse_schedule(text)
    assert (schedule.cron, schedule.timezone) == (cron, ZoneInfo(zone))


def test_ticks_are_computed_in_the_schedule_zone() -> None:
    schedule = parse_schedule("every day at 8am America/New_York")
    assert schedule.next_after(utc(2025, 1, 15, 12)) == utc(2025, 1, 15, 13)  # EST
    assert schedule.next_after(utc(2025, 7, 15, 12)) == utc(2025, 7, 16, 12)  # EDT
    assert schedule.next_after(utc(2025, 7, 15, 12)).tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("every blue moon", ["'blue moon'", "every 5 minutes"]),
        ("every 0 minutes", ["every 0 minutes", "1 to 60"]),
        ("every 61 seconds", ["1 to 60"]),
        ("every 25 hours", ["1 to 24"]),
        ("every 2 weeks", ["every 2 weeks"]),
        ("every day at 25pm", ["'25pm' is not a time of day"]),
        ("every day at 13am", ["'13am' is not a time of day"]),
        ("every day at 9:60", ["'9:60' is not a time of day"]),
        ("every day at 3pm Mars/Olympus", ["unknown time zone 'Mars/Olympus'"]),
        ("every 32nd of the month", ["'32nd' is not a day of the month"]),
        ("every 5 minutes at 3pm", ["'at <time>'"]),
        ("once a day", ["once a day", "every day at 3:30pm"]),
        ("", ["empty"]),
        ("   ", ["empty"]),
        ("@fortnightly", ["unknown macro"]),
        ("* * *", ["5 or 6 fields"]),
        ("0 0 * * * * 2025", ["5 or 6 fields"]),
        ("61 * * * *", ["not a valid cron expression"]),
        ("*/x * * * *", ["not a valid cron expression"]),
        ("0 0 30 2 *", ["never matches"]),
        ("H * * * *", ["not a valid cron expression"]),
    ],
)
def test_bad_input_is_a_configuration_error_listing_the_forms(
    text: str, expected: list[str]
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_schedule(text)
    message = str(caught.value)
    for part in [*expected, "Accepted forms", "@hourly", "America/New_York"]:
        assert part in message


def test_several_times_with_different_minutes_are_rejected_naming_the_crons() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_schedule("every weekday at 9am and 3:30pm")
    assert "'0 9 * * 1-5', '30 15 * * 1-5'" in str(caught.value)


# --- daylight saving: fixed-time schedules -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "day", "tick"),
    [
        # 02:30 does not exist: shifted forward by the gap, 03:30 EDT / CEST.
        ("every day at 2:30 America/New_York", (2025, 3, 9), utc(2025, 3, 9, 7, 30)),
        ("every day at 2:30 Europe/Berlin", (2025, 3, 30), utc(2025, 3, 30, 1, 30)),
        ("30 2 * * * America/New_York", (2025, 3, 9), utc(2025, 3, 9, 7, 30)),
        # 01:30 / 02:30 happen twice: the first occurrence, still on summer time.
        ("every day at 1:30 America/New_York", (2025, 11, 2), utc(2025, 11, 2, 5, 30)),
        ("every day at 2:30 Europe/Berlin", (2025, 10, 26), utc(2025, 10, 26, 0, 30)),
        ("30 1 * * * America/New_York", (2025, 11, 2), utc(2025, 11, 2, 5, 30)),
    ],
)
def test_daily_task_runs_exactly_once_on_a_transition_day(
    text: str, day: tuple[int, int, int], tick: datetime
) -> None:
    schedule = parse_schedule(text)
    start, end = local_day(schedule.timezone, *day)
    assert schedule.ticks_between(start, end) == [tick]
    assert schedule.ticks_between(start - timedelta(days=2), end + timedelta(days=2))[2] == tick


def test_skipped_time_runs_24_real_hours_after_the_previous_day() -> None:
    schedule = parse_schedule("every day at 2:30 America/New_York")
    ticks = schedule.ticks_between(utc(2025, 3, 8), utc(2025, 3, 11))
    assert ticks == [utc(2025, 3, 8, 7, 30), utc(2025, 3, 9, 7, 30), utc(2025, 3, 10, 6, 30)]


def test_shifted_times_that_collide_run_once() -> None:
    schedule = parse_schedule("0,30 2,3 * * * America/New_York")
    start, end = local_day(NEW_YORK, 2025, 3, 9)
    assert schedule.ticks_between(start, end) == [utc(2025, 3, 9, 7), utc(2025, 3, 9, 7, 30)]
    start, end = local_day(NEW_YORK, 2025, 11, 2)  # 02:00 and 03:00 happen once
    assert len(schedule.ticks_between(start, end)) == 4


def test_two_hourly_steps_never_drop_or_repeat_a_wall_clock_time() -> None:
    schedule = parse_schedule("every 2 hours America/New_York")
    start, end = local_day(NEW_YORK, 2025, 3, 9)
    assert len(schedule.ticks_between(start, end)) == 12
    start, end = local_day(NEW_YORK, 2025, 11, 2)
    assert len(schedule.ticks_between(start, end)) == 12


# --- daylight saving: every-hour schedules ----------------------------------------------------


@pytest.mark.parametrize("text", ["every 15 minutes", "*/15 * * * *", "0,15,30,45 * * * *"])
@pytest.mark.parametrize(
    ("zone", "day", "count"),
    [
        (NEW_YORK, (2025, 3, 9), 92),
        (NEW_YORK, (2025, 11, 2), 100),
        (BERLIN, (2025, 3, 30), 92),
        (BERLIN, (2025, 10, 26), 100),
        (NEW_YORK, (2025, 6, 1), 96),
    ],
)
def test_every_15_minutes_fires_every_real_quarter_hour_across_transitions(
    text: str, zone: ZoneInfo, day: tuple[int, int, int], count: int
) -> None:
    schedule = parse_schedule(f"{text} {zone.key}")
    start, end = local_day(zone, *day)
    ticks = schedule.ticks_between(start, end)
    assert len(ticks) == count == (end.astimezone(UTC) - start) // timedelta(minutes=15)
    assert ticks[-1] == end
    assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(ticks))


@pytest.mark.parametrize(("day", "count"), [((2025, 3, 9), 23), ((2025, 11, 2), 25)])
def test_hourly_fires_every_real_hour(day: tuple[int, int, int], count: int) -> None:
    schedule = parse_schedule("every hour America/New_York")
    ticks = schedule.ticks_between(*local_day(NEW_YORK, *day))
    assert len(ticks) == count
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(ticks))


TRANSITIONS = {
    "America/New_York": [utc(2025, 3, 9, 7), utc(2025, 11, 2, 6)],
    "Europe/Berlin": [utc(2025, 3, 30, 1), utc(2025, 10, 26, 1)],
    "Australia/Lord_Howe": [utc(2025, 4, 5, 15), utc(2025, 10, 4, 15, 30)],  # 30-minute DST
}
SCHEDULES = [
    "*/15 * * * *",
    "30 * * * *",
    "*/7 * * * *",
    "30 1 * * *",
    "30 2 * * *",
    "0,30 2,3 * * *",
    "0 */2 * * *",
    "*/20 1-3 * * *",
]


def brute_force(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """The documented rule, minute by minute, matching wall-clock times by hand."""
    minutes, hours, *rest = (
        {str(value) for value in field} for field in croniter(schedule.cron).expanded
    )
    assert rest == [{"*"}] * 3  # SCHEDULES restrict minutes and hours only

    def matches(wall: datetime) -> bool:
        return str(wall.minute) in minutes and (hours == {"*"} or str(wall.hour) in hours)

    ticks: set[datetime] = set()
    if hours == {"*"}:  # every real instant whose wall clock matches
        moment = start
        while (moment := moment + timedelta(minutes=1)) <= end:
            if matches(moment.astimezone(schedule.timezone)):
                ticks.add(moment)
    else:  # each matching wall-clock time once, at its fold=0 reading
        wall = start.astimezone(schedule.timezone).replace(tzinfo=None) - timedelta(hours=3)
        last = end.astimezone(schedule.timezone).replace(tzinfo=None) + timedelta(hours=3)
        while (wall := wall + timedelta(minutes=1)) <= last:
            moment = wall.replace(tzinfo=schedule.timezone).astimezone(UTC)
            if matches(wall) and start < moment <= end:
                ticks.add(moment)
    return sorted(ticks)


@pytest.mark.parametrize("cron", SCHEDULES)
@pytest.mark.parametrize("zone", sorted(TRANSITIONS))
def test_ticks_follow_the_documented_rule_across_transitions(cron: str, zone: str) -> None:
    schedule = parse_schedule(f"{cron} {zone}")
    for around in TRANSITIONS[zone]:
        start, end = around - timedelta(hours=26), around + timedelta(hours=26)
        assert schedule.ticks_between(start, end) == brute_force(schedule, start, end)


@pytest.mark.parametrize("cron", [*SCHEDULES, "*/10 * * * * *"])
@pytest.mark.parametrize("zone", sorted(TRANSITIONS))
def test_next_after_chains_strictly_and_agrees_with_the_other_methods(cron: str, zone: str) -> None:
    schedule = parse_schedule(f"{cron} {zone}")
    for around in TRANSITIONS[zone]:
        window = timedelta(hours=3 if len(cron.split()) == 5 else 1)
        start, end = around - window, around + window
        ticks = schedule.ticks_between(start, end)
        chained, moment = [], start
        while (moment := schedule.next_after(moment)) <= end:
            chained.append(moment)
        assert chained == ticks == sorted(set(ticks))
        previous = schedule.previous_at_or_before(start)
        for tick in ticks:
            assert schedule.previous_at_or_before(tick) == tick
            assert schedule.previous_at_or_before(tick - timedelta(microseconds=1)) == previous
            assert previous is not None
            assert schedule.next_after(previous) == tick
            previous = tick
        assert schedule.previous_at_or_before(end) == previous


def test_every_second_stays_exact_and_cheap_next_to_a_transition() -> None:
    schedule = parse_schedule("every second America/New_York")
    moment = utc(2025, 11, 2, 5, 59, 58)  # 01:59:58 EDT; at 06:00 UTC it is 01:00 EST again
    ticks = [moment := schedule.next_after(moment) for _ in range(3)]
    assert ticks == [utc(2025, 11, 2, 5, 59, 59), utc(2025, 11, 2, 6), utc(2025, 11, 2, 6, 0, 1)]
    began = time.perf_counter()
    for second in range(100):  # each call is a few croniter steps, not an hour of seconds
        moment = utc(2025, 11, 2, 5, 30) + timedelta(seconds=second)
        assert schedule.next_after(moment) == moment + timedelta(seconds=1)
        assert schedule.previous_at_or_before(moment) == moment
    assert time.perf_counter() - began < 2


# --- seconds, limits, previous ---------------------------------------------------------------


def test_seconds_schedules() -> None:
    schedule = parse_schedule("every 10 seconds")
    assert schedule.ticks_between(utc(2025, 1, 1), utc(2025, 1, 1, 0, 1)) == [
        utc(2025, 1, 1, 0, 0, s) for s in (10, 20, 30, 40, 50)
    ] + [utc(2025, 1, 1, 0, 1)]
    assert schedule.next_after(utc(2025, 1, 1, 0, 0, 10, 500)) == utc(2025, 1, 1, 0, 0, 20)
    assert parse_schedule("30 0 9 * * *").next_after(utc(2025, 1, 1)) == utc(2025, 1, 1, 9, 0, 30)
    every = parse_schedule("every second")
    assert len(every.ticks_between(utc(2025, 1, 1), utc(2025, 1, 1, 0, 1))) == 60


def test_every_30_seconds_over_the_fall_back_day() -> None:
    schedule = parse_schedule("every 30 seconds America/New_York")
    assert len(schedule.ticks_between(*local_day(NEW_YORK, 2025, 11, 2))) == 25 * 120


def test_ticks_between_is_exclusive_inclusive_and_limited() -> None:
    schedule = parse_schedule("every hour")
    start, end = utc(2025, 1, 1), utc(2025, 1, 1, 5)
    assert schedule.ticks_between(start, end) == [utc(2025, 1, 1, h) for h in range(1, 6)]
    assert schedule.ticks_between(start, end, limit=2) == [utc(2025, 1, 1, 1), utc(2025, 1, 1, 2)]
    assert schedule.ticks_between(start, end, limit=10) == schedule.ticks_between(start, end)
    assert schedule.ticks_between(start, end, limit=0) == []
    assert schedule.ticks_between(end, start) == []
    with pytest.raises(ValueError, match="negative"):
        schedule.ticks_between(start, end, limit=-1)


def test_previous_at_or_before() -> None:
    schedule = parse_schedule("every day at 3pm")
    assert schedule.previous_at_or_before(utc(2025, 1, 2, 15)) == utc(2025, 1, 2, 15)
    assert schedule.previous_at_or_before(utc(2025, 1, 2, 14, 59)) == utc(2025, 1, 1, 15)
    quarter = parse_schedule("every 15 minutes America/New_York")
    # 01:07 EST, in the repeated hour: the latest tick is 01:00 EST, not 01:00 EDT.
    assert quarter.previous_at_or_before(utc(2025, 11, 2, 6, 7)) == utc(2025, 11, 2, 6)
    nightly = parse_schedule("every day at 1:30 America/New_York")
    assert nightly.previous_at_or_before(utc(2025, 11, 2, 6, 45)) == utc(2025, 11, 2, 5, 30)
    late = parse_schedule("every day at 2:30 America/New_York")
    assert late.previous_at_or_before(utc(2025, 3, 9, 7, 29)) == utc(2025, 3, 8, 7, 30)
    assert late.previous_at_or_before(utc(2025, 3, 9, 7, 30)) == utc(2025, 3, 9, 7, 30)


def test_naive_datetimes_are_refused() -> None:
    schedule = parse_schedule("every hour")
    with pytest.raises(ValueError, match="aware"):
        schedule.next_after(datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        schedule.previous_at_or_before(datetime(2025, 1, 1))


def test_aware_input_in_any_zone() -> None:
    schedule = parse_schedule("every hour")
    moment = datetime(2025, 1, 1, 9, 30, tzinfo=NEW_YORK)
    assert schedule.next_after(moment) == utc(2025, 1, 1, 15)


def test_schedule_is_a_frozen_value() -> None:
    schedule = Schedule("x", "0 9 * * *", NEW_YORK)
    assert schedule == Schedule("x", "0 9 * * *", NEW_YORK)
    assert hash(schedule) == hash(Schedule("x", "0 9 * * *", NEW_YORK))
    assert Schedule("x", "0 9 * * *").timezone == ZoneInfo("UTC")
    with pytest.raises(AttributeError):
        schedule.cron = "* * * * *"  # type: ignore[misc]
    with pytest.raises(ConfigurationError, match="invalid cron"):
        Schedule("x", "not a cron")


def test_croniter_is_walked_in_naive_local_time() -> None:
    # croniter given aware datetimes runs this at 01:30 EDT *and* 01:30 EST on 2025-11-02.
    schedule = parse_schedule("30 1 * * * America/New_York")
    assert schedule.next_after(utc(2025, 11, 2, 5, 30)) == utc(2025, 11, 3, 6, 30)
