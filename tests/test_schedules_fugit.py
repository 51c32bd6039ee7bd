"""Schedules mean what they mean in Solid Queue: fugit's own tables, and fugit itself if installed.

``FUGIT_SPEC`` is fugit 1.11's specification of its English schedules
(``test/_nat_single_crons.txt`` in floraison/fugit; ``spec/`` before fugit moved its tests):
each phrase and the cron fugit turns it into, in fugit's notation (seconds first, time zone
last).  pgjobs must accept every one of them with the same ticks.  ``FUGIT_CRONS`` are crons
using fugit's extensions of cron (``fri#-1``, ``tue%2``, ``-1``, ``&``, ``+09:00``), each with
its first ticks as fugit computes them.  The oracle tests ask the ``fugit`` gem installed on the
machine (Debian: ``apt-get install ruby-fugit``) and are skipped without it.
"""

from __future__ import annotations

import functools
import itertools
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from pgjobs.config.schedules import parse_schedule
from pgjobs.errors import ConfigurationError

FUGIT_SPEC = [
    ("every day at five", "0 5 * * *"),
    ("every weekday", "0 0 * * 1-5"),
    ("every weekday at five", "0 5 * * 1-5"),
    ("every weekday at five pm", "0 17 * * 1-5"),
    ("every day at 5 pm", "0 17 * * *"),
    ("every monday", "0 0 * * 1"),
    ("every tuesday at 5 pm", "0 17 * * 2"),
    ("every wed at 5 pm", "0 17 * * 3"),
    ("every day at 16:30", "30 16 * * *"),
    ("every day at noon", "0 12 * * *"),
    ("every day at midnight", "0 0 * * *"),
    ("every day at 5 pm on America/Bogota", "0 17 * * * America/Bogota"),
    ("every day at 5 pm in Asia/Tokyo", "0 17 * * * Asia/Tokyo"),
    ("every day at 5 pm in Etc/GMT-11", "0 17 * * * Etc/GMT-11"),
    ("every day at 5 pm in Etc/GMT+5", "0 17 * * * Etc/GMT+5"),
    ("every 3h", "0 */3 * * *"),
    ("every 3 hours", "0 */3 * * *"),
    ("every 4M", "0 0 1 */4 *"),
    ("every 4 months", "0 0 1 */4 *"),
    ("every 5m", "*/5 * * * *"),
    ("every 5 min", "*/5 * * * *"),
    ("every 5 minutes", "*/5 * * * *"),
    ("every 15s", "*/15 * * * * *"),
    ("every 15 sec", "*/15 * * * * *"),
    ("every 15 seconds", "*/15 * * * * *"),
    ("every 1 h", "0 * * * *"),
    ("every 12 hours at minute 50", "50 */12 * * *"),
    ("every 12h at min 50", "50 */12 * * *"),
    ("every 1st of the month at midnight", "0 0 1 * *"),
    ("every first of the month at midnight", "0 0 1 * *"),
    ("Every 2nd of the month at 10:00", "0 10 2 * *"),
    ("Every second of the month at 10:00", "0 10 2 * *"),
    ("every month on day 2 at 10:00", "0 10 2 * *"),
    ("every month on day 2 and 5 at 10:00", "0 10 2,5 * *"),
    ("every month on days 1,15 at 10:00", "0 10 1,15 * *"),
    ("every month on the 1st at 11:00", "0 11 1 * *"),
    ("every 15th of the month", "0 0 15 * *"),
    ("every month on the 1st and 2nd at 12:00 pm", "0 12 1,2 * *"),
    ("every month on the 1st and the 2nd at 12:00 pm", "0 12 1,2 * *"),
    ("every month on the 1st and the second at 12:00 pm", "0 12 1,2 * *"),
    ("every month on the 1st and last at 12:00 pm", "0 12 1,L * *"),
    ("every month on the 1st and the last at 12:00 pm", "0 12 1,L * *"),
    ("every day at 6pm and 8pm", "0 18,20 * * *"),
    ("every day at 6pm and 8pm UTC", "0 18,20 * * * UTC"),
    ("every day at 18:00 and 20:00", "0 18,20 * * *"),
    ("every day at 18:00 and 20:00 UTC", "0 18,20 * * * UTC"),
    ("every day at 8:30", "30 8 * * *"),
    ("every day at 08:30", "30 8 * * *"),
    ("every day at 8:30 am", "30 8 * * *"),
    ("every day at 08:30 am", "30 8 * * *"),
    ("every day at 8:30 AM", "30 8 * * *"),
    ("every day at 8:30 pm", "30 20 * * *"),
    ("every day at 08:30 pm", "30 20 * * *"),
    ("every day at 08:30 PM", "30 20 * * *"),
    ("every day at 5pm", "0 17 * * *"),
    ("every day at 5:00pm", "0 17 * * *"),
    ("every day at 5:00 pm", "0 17 * * *"),
    ("every day at 12am", "0 0 * * *"),
    ("every day at 12pm", "0 12 * * *"),
    ("every day at 12:00am", "0 0 * * *"),
    ("every day at 12:00pm", "0 12 * * *"),
    ("every day at 12:00 am", "0 0 * * *"),
    ("every day at 12:00 pm", "0 12 * * *"),
    ("every day at 12:15am", "15 0 * * *"),
    ("every day at 12:15pm", "15 12 * * *"),
    ("every day at 12:15 am", "15 0 * * *"),
    ("every day at 12:15 pm", "15 12 * * *"),
    ("every day at 12 noon", "0 12 * * *"),
    ("every day at 12 midnight", "0 24 * * *"),
    ("every day at 12:00 noon", "0 12 * * *"),
    ("every day at 12:00 midnight", "0 24 * * *"),
    ("every day at 12:15 noon", "15 12 * * *"),
    ("every day at 12:15 midnight", "15 24 * * *"),
    ("every friday and thursday", "0 0 * * 4,5"),
    ("every tuesday and monday at 5pm", "0 17 * * 1,2"),
    ("every wed or Monday at 5pm and 11", "0 11,17 * * 1,3"),
    ("every Mon,Tue,Wed,Thu,Fri at 18:00", "0 18 * * 1,2,3,4,5"),
    ("every Mon, Tue, and Wed at 18:15", "15 18 * * 1,2,3"),
    ("every Mon to Thu at 18:20", "20 18 * * 1-4"),
    ("every Mon to Thu, 18:20", "20 18 * * 1-4"),
    ("every mon-thu at 18:20", "20 18 * * 1-4"),
    ("every Monday to Thursday at 18:20", "20 18 * * 1-4"),
    ("every Monday through Friday at 19:20", "20 19 * * 1-5"),
    ("from Monday through Friday at 19:21", "21 19 * * 1-5"),
    ("from Monday to Friday at 19:22", "22 19 * * 1-5"),
    ("every Fri-Sun at 18:00 UTC", "0 18 * * 5-0 UTC"),
    ("every day at 18:00 and 18:15", "0,15 18 * * *"),
    ("every day at 18:00, 18:15", "0,15 18 * * *"),
    ("every day at 18:00, 18:15, 20:00, and 20:15", "0,15 18,20 * * *"),
    ("every second", "* * * * * *"),
    ("every 1 second", "* * * * * *"),
    ("every minute", "* * * * *"),
    ("every 1 minute", "* * * * *"),
    ("every hour", "0 * * * *"),
    ("every 1 hour", "0 * * * *"),
    ("every day", "0 0 * * *"),
    ("every 1 day", "0 0 * * *"),
    ("every week", "0 0 * * 0"),
    ("every 1 week", "0 0 * * 0"),
    ("every month", "0 0 1 * *"),
    ("every 1 month", "0 0 1 * *"),
    ("every year", "0 0 1 1 *"),
    ("every 1 year", "0 0 1 1 *"),
    ("every minute at second 10", "10 * * * * *"),
    ("every minute at second 10 and 40", "10,40 * * * * *"),
    ("every minute at secs 10 and 40", "10,40 * * * * *"),
    ("every hour at min 11", "11 * * * *"),
    ("every day at 18:22", "22 18 * * *"),
    ("every week on monday 18:23", "23 18 * * 1"),
    ("every monday 18:24", "24 18 * * 1"),
    ("every month at 19:10", "10 19 1 * *"),
    ("every year at 20:10", "10 20 1 1 *"),
    ("every day at zero dark twenty", "20 0 * * *"),
    ("every day at zero dark forty", "40 0 * * *"),
    ("every day at oh dark forty", "40 0 * * *"),
    ("every day at one dark fifty", "50 1 * * *"),
    ("every 2 days", "0 0 */2 * *"),
    ("every 2 days at 17:00", "0 17 */2 * *"),
    ("every 2 months", "0 0 1 */2 *"),
    ("every day from the 25th to the last", "0 0 25-L * *"),
    ("every day at noon from the 25th to the last", "0 12 25-L * *"),
    ("from the 25th to the last", "0 0 25-L * *"),
    ("from the 25th to the last, at noon and midnight", "0 0,12 25-L * *"),
    ("every second starting at second 10", "10/1 * * * * *"),
    ("every second from second 10", "10/1 * * * * *"),
    ("every 15 minutes starting at minute 1", "1/15 * * * *"),
    ("every hour starting at hour 8", "0 8/1 * * *"),
    ("every 5 days starting at day 3", "0 0 3/5 * *"),
    ("every month starting at month 6", "0 0 1 6/1 *"),
    ("every weekday 8am to 5pm", "0 8-17 * * 1-5"),
    ("every weekday 8am to 5pm on the hour", "0 8-17 * * 1-5"),
    ("every weekday 8am to 5pm on the minute", "* 8-16 * * 1-5"),
    ("every weekday 8am to 5pm on minute 10 and 30", "10,30 8-16 * * 1-5"),
    ("every hour, 8am to 5pm", "0 8-17 * * *"),
    ("every hour, from 8am to 5pm", "0 8-17 * * *"),
    ("every minute, 8am to 5pm", "* 8-16 * * *"),
    ("every minute from 8am to 5pm", "* 8-16 * * *"),
    ("at 12:00 PM", "0 12 * * *"),
    ("at 12:00PM", "0 12 * * *"),
    ("at 12 PM", "0 12 * * *"),
    ("at 12PM", "0 12 * * *"),
    ("at 12:00 pm", "0 12 * * *"),
    ("at 12:00pm", "0 12 * * *"),
    ("at 12 pm", "0 12 * * *"),
    ("at 12pm", "0 12 * * *"),
    ("at noon", "0 12 * * *"),
    ("at 12 noon", "0 12 * * *"),
    ("at 12 Noon", "0 12 * * *"),
    ("at 12 NOON", "0 12 * * *"),
    ("at 12 midday", "0 12 * * *"),
    ("at 12 midnight", "0 24 * * *"),
    ("every 17 hours", "0 */17 * * *"),
    ("every day at midnight America/Los_Angeles", "0 0 * * * America/Los_Angeles"),
    ("every 60 minutes", "*/60 * * * *"),
]

# Beyond fugit's table: more forms that fugit reads, each with the cron fugit gives.
MORE = [
    ("every hour at minute 12", "12 * * * *"),  # what Rails generates
    ("every 2 hours at minute 45", "45 */2 * * *"),
    ("at 7am Asia/Seoul every day", "0 7 * * * Asia/Seoul"),
    ("every month on the 1st at 3am", "0 3 1 * *"),
    ("every 60 seconds", "*/60 * * * * *"),
    ("every day at 5 pm on America/Bogota", "0 17 * * * America/Bogota"),
    ("every day at 5pm Z", "0 17 * * * UTC"),
    ("at 5pm every day", "0 17 * * *"),
    ("every twelfth of the month at five thirty pm", "30 17 12 * *"),
    ("every thirty-first of the month", "0 0 31 * *"),
    ("every day at seven o'clock", "0 7 * * *"),
    ("every 24 hours", "0 */24 * * *"),
    ("every weekday at 9am and 3pm", "0 9,15 * * 1-5"),
    ("every sat-mon at 10am", "0 10 * * 6-1"),
    ("every day at 9 +09:00", "0 9 * * * +09:00"),
    ("at 9am -0300 every day", "0 9 * * * -0300"),
]

# Forms fugit rejects that pgjobs accepts, with the cron they would be in fugit's notation.
BEYOND_FUGIT = [
    ("every weekend at 10am", "0 10 * * 0,6"),
    ("every mondays at 9am", "0 9 * * 1"),
    ("every 1st of month at 8am", "0 8 1 * *"),
    ("every last day of the month", "0 0 L * *"),
    ("every 5 mins", "*/5 * * * *"),
    ("every 2 hrs", "0 */2 * * *"),
    ("every day at 15:30:10", "10 30 15 * * *"),
    ("every day at 8am america/new_york", "0 8 * * * America/New_York"),
    ("every day at 9am +12:45", "0 9 * * * +12:45"),  # fugit's offsets stop at 11:45
]

# fugit's answers for the phrases below changed after Debian's 1.5.2 (am/pm around 12 and
# "5:00pm" were fixed by 1.11); the oracle compares them only with a fugit of 1.11 or later.
CHANGED_SINCE_1_5 = {
    "every day at 5:00pm", "every day at 12am", "every day at 12:00am", "every day at 12:00 am",
    "every day at 12:15am", "every day at 12:15 am", "every day at 12:00 midnight",
    "every day at 12:15 noon", "every day at 12:15 midnight",
}  # fmt: skip


_OFFSET = re.compile(r"([+-])(\d\d):?(\d\d)")


def fugit_meaning(cron: str) -> tuple[list[list[Any]], tzinfo]:
    """The ticks of a cron in fugit's notation: croniter's expanded fields, and the zone."""
    fields, zone = cron.split(), "UTC"
    if fields[-1] == "UTC" or ("/" in fields[-1] and fields[-1][0].isalpha()):
        zone = fields.pop()
    offset = _OFFSET.fullmatch(fields[-1])
    if offset:
        fields.pop()
    if len(fields) == 6:  # seconds first in fugit, last in croniter
        fields = [*fields[1:], fields[0]]
    fields[1] = ",".join("0" if hour == "24" else hour for hour in fields[1].split(","))
    if offset:
        sign = -1 if offset[1] == "-" else 1
        hours, minutes = int(offset[2]), int(offset[3])
        return croniter(" ".join(fields)).expanded, timezone(
            sign * timedelta(hours=hours, minutes=minutes)
        )
    return croniter(" ".join(fields)).expanded, ZoneInfo(zone)


def meaning(text: str) -> tuple[list[list[Any]], tzinfo]:
    schedule = parse_schedule(text)
    return croniter(schedule.cron).expanded, schedule.timezone


@pytest.mark.parametrize(("text", "cron"), FUGIT_SPEC + MORE + BEYOND_FUGIT)
def test_fugit_phrases_give_fugits_cron(text: str, cron: str) -> None:
    assert meaning(text) == fugit_meaning(cron)


@pytest.mark.parametrize(
    ("text", "cron"),
    [
        ("every hour at minute 12", "12 * * * *"),
        ("every weekday at five pm", "0 17 * * 1-5"),
        ("every month on the 1st and the last at 12:00 pm", "0 12 1,L * *"),
        ("every day at 18:00, 18:15, 20:00, and 20:15", "0,15 18,20 * * *"),
        ("every 15s", "* * * * * */15"),
        ("every Mon to Thu, 18:20", "20 18 * * 1-4"),
        ("every weekday 8am to 5pm on minute 10 and 30", "10,30 8-16 * * 1-5"),
        ("every second starting at second 10", "* * * * * 10/1"),
    ],
)
def test_crons_are_written_as_fugit_writes_them(text: str, cron: str) -> None:
    assert parse_schedule(text).cron == cron  # croniter's order: seconds last


# The forms that need several crons (docs/recurring.md lists them all), with those crons as
# recurring.yml takes them (6 fields: seconds first) and the times of day they fire together.
SEVERAL_CRONS = [
    ("every day at 18:15 and 20:45", "'15 18 * * *', '45 20 * * *'", "18:15:00 20:45:00"),
    ("every day at 8:30 and 18:45", "'30 8 * * *', '45 18 * * *'", "08:30:00 18:45:00"),
    ("every weekday at 9am and 3:30pm", "'0 9 * * 1-5', '30 15 * * 1-5'", "09:00:00 15:30:00"),
    ("every day at 9am, 9:30am and 3pm", "'0 9,15 * * *', '30 9 * * *'",
     "09:00:00 09:30:00 15:00:00"),
    ("every day at 9:00:10 and 9:00:20", "'10 0 9 * * *', '20 0 9 * * *'",
     "09:00:10 09:00:20"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "crons", "times"), SEVERAL_CRONS)
def test_several_crons_are_rejected_naming_them(text: str, crons: str, times: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_schedule(text)
    assert "configure one recurring task per cron: " + crons in str(caught.value)
    # the crons named, configured as one task each, fire at the times the text gives
    monday = (datetime(2025, 1, 6, tzinfo=UTC), datetime(2025, 1, 7, tzinfo=UTC))
    fired = sorted(
        tick for cron in crons.strip("'").split("', '")
        for tick in parse_schedule(cron).ticks_between(*monday)
    )  # fmt: skip
    assert " ".join(f"{tick:%H:%M:%S}" for tick in fired) == times


def test_docs_list_every_form_that_needs_several_crons() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "recurring.md").read_text()
    for text, crons, _ in SEVERAL_CRONS:
        row = f"| `{text}` | " + ", ".join(f"`{c}`" for c in crons.strip("'").split("', '"))
        assert row in page, f"docs/recurring.md does not list {text!r} with its crons"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("every 2 weeks", "only 1"),
        ("every 2 years", "only 1"),
        ("every 61 minutes", "1 to 60 minutes"),
        ("every 25 hours", "1 to 24 hours"),
        ("every 13 months", "1 to 12 months"),
        ("every day at 13pm", "'13pm' is not a time of day"),
        ("every month on day 32", "from 1 to 31"),
        ("every hour at 5pm", "'at <time>' goes with days, not with hours"),
        ("every day at hour 5", "'hour 5' is not understood"),
        ("every weekday 8am to 5:30pm", "the minutes of 8:00 and 17:30 differ"),
        ("every 5 minutes starting at hour 3", "the unit must be that of 'every'"),
        ("every day on tuesdays and the 45th", "'45th' is not a day of the month"),
        ("every day at 5pm Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("5pm every day", "cannot understand schedule"),
    ],
)
def test_what_fugit_reads_differently_or_not_at_all_is_refused(text: str, expected: str) -> None:
    with pytest.raises(ConfigurationError, match="Accepted forms") as caught:
        parse_schedule(text)
    assert expected in str(caught.value)


# --- fugit's extensions of cron ----------------------------------------------------------------

START = datetime(2024, 12, 1, tzinfo=UTC)

# Crons in fugit's notation, each with its first ticks after START (UTC) as fugit gives them.
FUGIT_CRONS = [
    # the n-th (last) weekday of the month
    ("0 9 * * fri#-1", "2024-12-27 09:00", "2025-01-31 09:00", "2025-02-28 09:00"),
    ("0 9 * * 5#L", "2024-12-27 09:00", "2025-01-31 09:00", "2025-02-28 09:00"),
    ("0 9 * * fri#last", "2024-12-27 09:00", "2025-01-31 09:00", "2025-02-28 09:00"),
    ("0 9 * * 1#-1", "2024-12-30 09:00", "2025-01-27 09:00", "2025-02-24 09:00"),
    ("0 9 * * mon#-2", "2024-12-23 09:00", "2025-01-20 09:00", "2025-02-17 09:00"),
    ("0 9 * * 5#-5", "2025-01-03 09:00", "2025-05-02 09:00", "2025-08-01 09:00"),
    ("0 12 * * fri#-1,mon#1", "2024-12-02 12:00", "2024-12-27 12:00", "2025-01-06 12:00"),
    ("0 9 1 * fri#-1", "2024-12-01 09:00", "2024-12-27 09:00", "2025-01-01 09:00"),
    ("0 9 * * mon#1", "2024-12-02 09:00", "2025-01-06 09:00", "2025-02-03 09:00"),
    ("0 23 * * mon#2,tue", "2024-12-03 23:00", "2024-12-09 23:00", "2024-12-10 23:00"),
    # every n-th week (weeks numbered from 2019-01-01, week 1)
    ("0 9 * * tue%2", "2024-12-03 09:00", "2024-12-17 09:00", "2024-12-31 09:00"),
    ("0 9 * * mon%2+1", "2024-12-02 09:00", "2024-12-16 09:00", "2024-12-30 09:00"),
    ("0 9 * * sun%2,tue%3", "2024-12-08 09:00", "2024-12-17 09:00", "2024-12-22 09:00"),
    ("0 9 * * thu%3+1", "2024-12-05 09:00", "2024-12-26 09:00", "2025-01-16 09:00"),
    ("0 9 */10 * mon%2", "2024-12-01 09:00", "2024-12-09 09:00", "2024-12-11 09:00"),
    # days of the month from its end
    ("0 9 -1 * *", "2024-12-31 09:00", "2025-01-31 09:00", "2025-02-28 09:00"),
    ("0 9 last * *", "2024-12-31 09:00", "2025-01-31 09:00", "2025-02-28 09:00"),
    ("0 9 -2 * *", "2024-12-30 09:00", "2025-01-30 09:00", "2025-02-27 09:00"),
    ("0 9 -3--1 2 *", "2025-02-26 09:00", "2025-02-27 09:00", "2025-02-28 09:00"),
    ("0 9 -7-L 2 *", "2025-02-22 09:00", "2025-02-23 09:00", "2025-02-24 09:00"),
    ("0 9 -31 * *", "2024-12-01 09:00", "2025-01-01 09:00", "2025-03-01 09:00"),
    ("0 9 -1,15 * *", "2024-12-15 09:00", "2024-12-31 09:00", "2025-01-15 09:00"),
    ("30 */20 0 -1 * *", "2024-12-31 00:00:30", "2024-12-31 00:20:30", "2024-12-31 00:40:30"),
    # a step from a day of the week: fugit reads '1/2' as Monday alone
    ("0 9 * * 1/2", "2024-12-02 09:00", "2024-12-09 09:00", "2024-12-16 09:00"),
    # '&': the day of the month AND the day of the week (fugit's README)
    ("59 6 1-7 * 2&", "2024-12-03 06:59", "2025-01-07 06:59", "2025-02-04 06:59"),
    ("59 6 1-7& * 2", "2024-12-03 06:59", "2025-01-07 06:59", "2025-02-04 06:59"),
    ("0 0 */2& * 1-5", "2024-12-03 00:00", "2024-12-05 00:00", "2024-12-09 00:00"),
    # fixed offsets
    ("0 9 * * * +09:00", "2024-12-02 00:00", "2024-12-03 00:00", "2024-12-04 00:00"),
    ("0 9 * * * +0900", "2024-12-02 00:00", "2024-12-03 00:00", "2024-12-04 00:00"),
    ("0 9 * * * -05:30", "2024-12-01 14:30", "2024-12-02 14:30", "2024-12-03 14:30"),
    ("0 9 * * fri#-1 +05:45", "2024-12-27 03:15", "2025-01-31 03:15", "2025-02-28 03:15"),
]
# What fugit before 1.7 (Debian's 1.5.2) reads otherwise: '&' is 1.7's, and 1.7 changed
# '%n+k' from (week + k) % n == 0 to week % n == k % n (the same for n = 2).
CHANGED_SINCE_1_5_CRONS = {"0 9 * * thu%3+1", "59 6 1-7 * 2&", "59 6 1-7& * 2", "0 0 */2& * 1-5"}


def first_ticks(cron: str, count: int = 3, start: datetime = START) -> list[str]:
    schedule, ticks = parse_schedule(cron), []
    for _ in range(count):
        start = schedule.next_after(start)
        ticks.append(f"{start:%Y-%m-%d %H:%M}" + (f":{start:%S}" if start.second else ""))
    return ticks


@pytest.mark.parametrize(("cron", *"abc"), FUGIT_CRONS)
def test_fugits_cron_extensions_tick_as_in_fugit(cron: str, a: str, b: str, c: str) -> None:
    assert first_ticks(cron) == [a, b, c]


def test_the_extensions_walk_backwards_and_between_too() -> None:
    schedule = parse_schedule("0 9 * * fri#-1")
    assert schedule.previous_at_or_before(datetime(2025, 3, 1, tzinfo=UTC)) == datetime(
        2025, 2, 28, 9, tzinfo=UTC
    )
    ticks = schedule.ticks_between(START, datetime(2025, 6, 1, tzinfo=UTC))
    assert [tick.day for tick in ticks] == [27, 31, 28, 28, 25, 30]
    last_day = parse_schedule("*/30 * * -1 * *")  # every 30 seconds on the last day
    assert last_day.next_after(datetime(2025, 2, 1, tzinfo=UTC)) == datetime(
        2025, 2, 28, tzinfo=UTC
    )
    assert last_day.previous_at_or_before(datetime(2025, 2, 15, tzinfo=UTC)) == datetime(
        2025, 1, 31, 23, 59, 30, tzinfo=UTC
    )


def test_every_other_week_counts_calendar_weeks_across_daylight_saving() -> None:
    """fugit's week number is measured in seconds between noons, so in New York its Tuesdays
    slip a week at each daylight-saving change; pgjobs counts calendar days: every 14 days."""
    schedule = parse_schedule("0 9 * * tue%2 America/New_York")
    ticks = schedule.ticks_between(
        datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    )
    days = [tick.astimezone(ZoneInfo("America/New_York")).date() for tick in ticks]
    assert {(later - earlier).days for earlier, later in itertools.pairwise(days)} == {14}
    assert all(tick.astimezone(ZoneInfo("America/New_York")).hour == 9 for tick in ticks)


def test_a_fixed_offset_has_no_daylight_saving() -> None:
    schedule = parse_schedule("0 9 * * * -05:00")
    summer = schedule.next_after(datetime(2025, 7, 1, tzinfo=UTC))
    winter = schedule.next_after(datetime(2025, 1, 1, tzinfo=UTC))
    assert (summer.hour, winter.hour) == (14, 14)
    assert schedule.timezone.utcoffset(None) == timedelta(hours=-5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0 9 * * mon%0", "'%' is followed by a number of weeks"),
        ("0 9 -5-2 * *", "not from -5 to 2"),
        ("0 9 -32 * *", "'-32' is not a day of the month"),
        ("0 9 x * mon%2", "'x' is not a day of the month"),
        ("0 9 * * fri#-1,x", "'x' is not a day of the week"),
        ("0 9 -31 2 *", "never matches a date"),
        ("0 9 * * * +14:15", "unknown time zone offset '+14:15'"),
        ("0 9 * * * +9:00", "unknown time zone offset '+9:00'"),
        ("every day at 9 +09:10", "unknown time zone offset '+09:10'"),
    ],
)
def test_what_fugits_extensions_do_not_allow_is_refused(text: str, expected: str) -> None:
    with pytest.raises(ConfigurationError, match="Accepted forms") as caught:
        parse_schedule(text)
    assert expected in str(caught.value)


# --- 6-field crons -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cron"),
    [
        ("*/30 * * * * *", "* * * * * */30"),  # every 30 seconds, as in fugit
        ("30 0 9 * * *", "0 9 * * * 30"),  # 09:00:30
        ("0 */5 * * * * Europe/Paris", "*/5 * * * * 0"),
        ("seconds-last 0 9 * * * 30", "0 9 * * * 30"),  # croniter's order, asked for
        ("Seconds-Last */30 * * * * *", "*/30 * * * * *"),  # every 30 minutes
        ("seconds-last 0 9 * * * 30 America/New_York", "0 9 * * * 30"),
    ],
)
def test_six_field_crons_have_the_seconds_first_unless_asked(text: str, cron: str) -> None:
    assert parse_schedule(text).cron == cron


def test_six_field_order_matches_fugit_ticks() -> None:
    assert meaning("*/30 * * * * *") == fugit_meaning("*/30 * * * * *")
    assert meaning("15 30 8 * * 1-5") == fugit_meaning("15 30 8 * * 1-5")


@pytest.mark.parametrize(
    "text",
    [
        "seconds-last 0 9 * * *",
        "seconds-last",
        "seconds-last every day",
        "seconds-last x y z w v u",
    ],
)
def test_seconds_last_needs_a_six_field_cron(text: str) -> None:
    with pytest.raises(
        ConfigurationError, match="'seconds-last' is followed by a cron of 6 fields"
    ):
        parse_schedule(text)


# --- the oracle: fugit itself --------------------------------------------------------------


@functools.cache
def fugit_version() -> str | None:
    if shutil.which("ruby") is None:
        return None
    ran = subprocess.run(
        ["ruby", "-rfugit", "-e", "puts Fugit::VERSION"],
        capture_output=True,
        text=True,
        check=False,
    )
    return ran.stdout.strip() if ran.returncode == 0 else None


def ask_fugit(phrases: list[str]) -> list[str | None]:
    """fugit's cron for each phrase (``Fugit::Nat.parse(...).original``), None if it has none."""
    script = (
        "STDIN.each_line { |l| c = (Fugit::Nat.parse(l.strip) rescue nil); "
        "puts(c.is_a?(Fugit::Cron) ? c.original : '-') }"
    )
    ran = subprocess.run(
        ["ruby", "-rfugit", "-e", script], input="\n".join(phrases) + "\n", capture_output=True,
        text=True, check=True, timeout=60,
    )  # fmt: skip
    return [None if line == "-" else line for line in ran.stdout.splitlines()]


@pytest.mark.skipif(fugit_version() is None, reason="ruby with the fugit gem is not installed")
def test_fugit_itself_agrees() -> None:
    version = tuple(int(part) for part in (fugit_version() or "0").split(".")[:2])
    phrases = [text for text, _ in FUGIT_SPEC + MORE]
    if version < (1, 11):
        phrases = [text for text in phrases if text not in CHANGED_SINCE_1_5]
    compared, differ = 0, []
    for text, cron in zip(phrases, ask_fugit(phrases), strict=True):
        if cron is None:  # this fugit does not read it (an older version, or beyond fugit)
            continue
        compared += 1
        if meaning(text) != fugit_meaning(cron):
            differ.append(f"{text!r}: fugit {cron!r}, pgjobs {parse_schedule(text).cron!r}")
    assert not differ
    assert compared >= 100
    assert ask_fugit([text for text, _ in BEYOND_FUGIT]) == [None] * len(BEYOND_FUGIT)


def ask_fugit_ticks(crons: list[str], count: int = 12) -> list[list[str] | None]:
    """fugit's first ``count`` ticks after START for each cron (UTC), None if it has none."""
    script = (
        "STDIN.each_line { |l| c = (Fugit.parse_cron(l.strip) rescue nil); t = EtOrbi.make_time("
        f'"{START:%Y-%m-%d %H:%M:%S} UTC"); puts(c ? (1..{count}).map {{ t = c.next_time(t); '
        't.to_t.utc.strftime("%Y-%m-%d %H:%M:%S") }.join(",") : "-") }'
    )
    ran = subprocess.run(
        ["ruby", "-rfugit", "-e", script], input="\n".join(crons) + "\n", capture_output=True,
        text=True, check=True, timeout=60,
    )  # fmt: skip
    return [None if line == "-" else line.split(",") for line in ran.stdout.splitlines()]


@pytest.mark.skipif(fugit_version() is None, reason="ruby with the fugit gem is not installed")
def test_fugit_itself_ticks_its_cron_extensions_the_same() -> None:
    version = tuple(int(part) for part in (fugit_version() or "0").split(".")[:2])
    crons = [cron for cron, *_ in FUGIT_CRONS]
    if version < (1, 7):
        crons = [cron for cron in crons if cron not in CHANGED_SINCE_1_5_CRONS]
    differ = []
    for cron, ticks in zip(crons, ask_fugit_ticks(crons), strict=True):
        assert ticks is not None, f"fugit {fugit_version()} does not read {cron!r}"
        mine = [f"{tick:%Y-%m-%d %H:%M:%S}" for tick in _ticks(cron, len(ticks))]
        if mine != ticks:
            differ.append(f"{cron!r}: fugit {ticks[:4]}..., pgjobs {mine[:4]}...")
    assert not differ
    assert len(crons) >= 25
    assert ask_fugit_ticks(["0 9 * * * +12:45"]) == [None]  # beyond fugit: pgjobs reads it


def _ticks(cron: str, count: int) -> list[datetime]:
    schedule, start, found = parse_schedule(cron), START, []
    for _ in range(count):
        start = schedule.next_after(start)
        found.append(start)
    return found
