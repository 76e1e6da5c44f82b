"""Schedules: words and cron parse to the same runs cron would make, errors say what was
expected, and the systemd OnCalendar= form fires at exactly the same times (checked with
`systemd-analyze calendar` where it is installed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from safehold.policy.schedule import ScheduleError, parse_schedule

BASE = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)  # a Sunday


@pytest.mark.parametrize(
    ("text", "expression"),
    [
        ("daily", "0 0 * * *"),
        ("@daily", "0 0 * * *"),
        ("Daily at 02:30", "30 2 * * *"),
        ("hourly", "0 * * * *"),
        ("hourly at :15", "15 * * * *"),
        ("weekly", "0 0 * * 0"),
        ("weekly at 04:00", "0 4 * * 0"),
        ("monthly", "0 0 1 * *"),
        ("every 15m", "*/15 * * * *"),
        ("every 15 minutes", "*/15 * * * *"),
        ("every 6h", "0 */6 * * *"),
        ("30 2 * * 1-5", "30 2 * * 1-5"),
        ("0 3 1 * mon", "0 3 1 * mon"),
    ],
)
def test_words_and_cron(text: str, expression: str) -> None:
    cron = parse_schedule(text)
    assert cron is not None and cron.expression == expression


def test_off() -> None:
    assert parse_schedule("off") is None and parse_schedule("Never") is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("daily at 25:00", "24-hour time"),
        ("every 7m", "dividing 60"),
        ("every 5h", "dividing 24"),
        ("0 3 * *", "a schedule like"),
        ("61 * * * *", 'minute from 0 to 59 in field 1 of the cron expression; found "61"'),
        ("0 0 L * *", 'day of month from 1 to 31 in field 3 of the cron expression; found "L"'),
        ("0 0 5-1 * *", "a range from low to high"),
        ("0 0 31 2 *", "ever runs"),
        ("soon", "a schedule like"),
    ],
)
def test_errors_say_what_was_expected(text: str, says: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(text)
    assert says in str(caught.value)


def test_next_and_previous_runs() -> None:
    cron = parse_schedule("daily at 02:00")
    assert cron is not None
    assert cron.next_after(BASE, UTC) == BASE + timedelta(hours=2)
    assert cron.next_after(BASE + timedelta(hours=2), UTC) == BASE + timedelta(days=1, hours=2)
    at_run = BASE + timedelta(hours=2)
    assert cron.previous_at_or_before(at_run, UTC) == at_run
    assert cron.previous_at_or_before(at_run - timedelta(seconds=1), UTC) == at_run - timedelta(
        days=1
    )
    runs = cron.runs_between(BASE, BASE + timedelta(days=3), UTC)
    assert [r.day for r in runs] == [1, 2, 3]


def test_cron_ors_day_of_month_and_weekday() -> None:
    cron = parse_schedule("0 3 15 * mon")
    assert cron is not None
    runs = cron.runs_between(BASE, BASE + timedelta(days=20), UTC)
    assert [run.strftime("%a %d") for run in runs] == ["Mon 02", "Mon 09", "Sun 15", "Mon 16"]
    assert len(cron.on_calendar()) == 2


def test_wall_clock_time_across_dst() -> None:
    berlin = ZoneInfo("Europe/Berlin")  # DST starts 2026-03-29 at 02:00 -> 03:00
    cron = parse_schedule("daily at 04:00")
    assert cron is not None
    start, end = datetime(2026, 3, 28, tzinfo=berlin), datetime(2026, 3, 31, tzinfo=berlin)
    runs = cron.runs_between(start, end, berlin)
    assert [(r.day, r.hour) for r in runs] == [(28, 4), (29, 4), (30, 4)]
    assert runs[1].astimezone(UTC) - runs[0].astimezone(UTC) == timedelta(hours=23)  # short night


def test_rhythm() -> None:
    hourly, daily = parse_schedule("hourly"), parse_schedule("daily")
    assert hourly is not None and daily is not None
    assert hourly.shortest_gap(BASE) == timedelta(hours=1)
    assert daily.shortest_gap(BASE) == timedelta(days=1)


CALENDAR_CASES = [
    "daily at 02:30",
    "every 15m",
    "hourly at :07",
    "weekly at 04:00",
    "monthly",
    "*/10 1-5 * jan-mar *",
    "0 3 15 * mon",
    "0 0 * * 1-5",
    "5 4 */2 * *",
]

_ELAPSE = re.compile(r"(?:Next elapse|Iter\. #\d+): \w{3} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")


@pytest.mark.parametrize("text", CALENDAR_CASES)
def test_on_calendar_fires_when_cron_does(text: str) -> None:
    cron = parse_schedule(text)
    assert cron is not None
    values = cron.on_calendar()
    day = "(Sun|Mon|Tue|Wed|Thu|Fri|Sat)"
    shape = re.compile(rf"({day}(,{day})* )?\*-[0-9*,]+-[0-9*,]+ [0-9*,]+:[0-9*,]+:00")
    for value in values:  # structurally: [weekdays] *-M-D H:M:00, numbers and names only
        assert shape.fullmatch(value), value
    expected = cron.runs_between(BASE, BASE + timedelta(days=400), UTC, limit=12)
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # still checked by hand above; CI installs systemd (scripts/test-all.sh)
        assert len(expected) == 12
        return
    fired: set[datetime] = set()
    for value in values:
        done = subprocess.run(
            [analyze, "calendar", "--iterations=12", "--base-time=2026-03-01 00:00:00", value],
            capture_output=True,
            text=True,
            env={**os.environ, "TZ": "UTC"},
            check=True,
        )
        for stamp in _ELAPSE.findall(done.stdout):
            fired.add(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC))
    assert sorted(fired)[:12] == expected
