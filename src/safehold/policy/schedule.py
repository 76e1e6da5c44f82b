"""When jobs run: cron expressions and a few words, next/previous run times, and the same
times said as systemd `OnCalendar=` lines and crontab fields.

Pure: no I/O and no clock (the caller passes `now`). Times are wall-clock times in the local
time zone unless a `tz` is given, as cron and systemd timers use them.

The arithmetic is cronsim's (the cron evaluator Healthchecks.io runs on; it handles DST gaps
and overlaps and cron's rule that a restricted day-of-month and day-of-week are ORed). This
module adds the words, a strict parser for the part of cron syntax that systemd can express
(numbers, names, `*`, `,`, `-`, `/` — no `L`, `W`, `#` or `?`), so whatever a plan says can be
installed as a timer as well as a crontab line, and the conversion to `OnCalendar=`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from itertools import pairwise

from cronsim import CronSim, CronSimError

FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_SYSTEMD_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
OFF_WORDS = ("off", "never", "none")

WORDS = {
    "hourly": "0 * * * *",
    "daily": "0 0 * * *",
    "weekly": "0 0 * * 0",
    "monthly": "0 0 1 * *",
}
_AT = re.compile(r"(?P<word>hourly|daily|weekly|monthly)(?:\s+at\s+(?P<at>\S+))?")
_CLOCK = re.compile(r"(?P<hour>\d{1,2}):(?P<minute>\d{2})")
_MINUTE_MARK = re.compile(r":(?P<minute>\d{2})")
_EVERY = re.compile(r"every\s+(?P<count>\d+)\s*(?P<unit>m|min|minutes?|h|hours?)")

EXAMPLES = '"daily", "daily at 02:30", "hourly", "every 15m", "weekly", or cron like "30 2 * * *"'


class ScheduleError(ValueError):
    """A schedule that cannot be understood; the message says what was expected."""


@dataclass(frozen=True)
class Cron:
    """A parsed schedule. `expression` is the 5-field cron form of what was written."""

    text: str
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def next_after(self, moment: datetime, tz: tzinfo | None = None) -> datetime:
        """The first run strictly after `moment` (an aware datetime)."""
        return self._step(moment, tz, reverse=False)

    def previous_at_or_before(self, moment: datetime, tz: tzinfo | None = None) -> datetime:
        """The last run at or before `moment` (an aware datetime)."""
        return self._step(moment + timedelta(seconds=1), tz, reverse=True)

    def runs_between(
        self, start: datetime, end: datetime, tz: tzinfo | None = None, limit: int = 1000
    ) -> list[datetime]:
        """Runs in (start, end], at most `limit` of them."""
        runs: list[datetime] = []
        moment = start
        while len(runs) < limit:
            moment = self.next_after(moment, tz)
            if moment > end:
                break
            runs.append(moment)
        return runs

    def shortest_gap(self, around: datetime) -> timedelta:
        """The shortest time between two runs over the next year or so (a schedule's rhythm:
        hourly backups are named `hourly`, daily ones `daily`)."""
        runs = self.runs_between(around, around + timedelta(days=400), limit=60)
        gaps = [later - earlier for earlier, later in pairwise(runs)]
        return min(gaps) if gaps else timedelta(days=365)

    def describe(self) -> str:
        """The schedule in words, like `At 02:30 every day`."""
        try:
            return CronSim(self.expression, datetime(2000, 1, 1)).explain()
        except (CronSimError, ValueError):  # explain() is best-effort in cronsim
            return self.expression

    def on_calendar(self) -> list[str]:
        """systemd `OnCalendar=` values that fire exactly when this schedule does.

        cron ORs a restricted day of month with a restricted day of week; systemd ANDs them,
        so that case needs two values (a timer fires on the union of its OnCalendar lines)."""
        hours = "*" if len(self.hours) == 24 else _list(self.hours)
        minutes = "*" if len(self.minutes) == 60 else _list(self.minutes)
        time = f"{hours}:{minutes}:00"
        month = "*" if len(self.months) == 12 else _list(self.months)
        days = "*" if not self.days_restricted else _list(self.days)
        weekdays = ",".join(_SYSTEMD_DAYS[d] for d in sorted(self.weekdays))
        if self.days_restricted and self.weekdays_restricted:
            return [f"*-{month}-{days} {time}", f"{weekdays} *-{month}-* {time}"]
        if self.weekdays_restricted:
            return [f"{weekdays} *-{month}-* {time}"]
        return [f"*-{month}-{days} {time}"]

    def _step(self, moment: datetime, tz: tzinfo | None, *, reverse: bool) -> datetime:
        if moment.tzinfo is None:
            raise ValueError("pass an aware datetime")
        if tz is not None:
            start = moment.astimezone(tz)
            return next(CronSim(self.expression, start, reverse=reverse))
        # Local wall-clock time: step on the naive local time, then let the OS say which
        # offset that wall-clock time has (DST).
        start_naive = moment.astimezone().replace(tzinfo=None)
        found = next(CronSim(self.expression, start_naive, reverse=reverse))
        return found.astimezone()


def _list(values: frozenset[int]) -> str:
    return ",".join(f"{value:02d}" for value in sorted(values))


def parse_schedule(text: str) -> Cron | None:
    """`text` as a schedule; None for "off". Raises ScheduleError naming what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ScheduleError(f"a schedule like {EXAMPLES}")
    words = " ".join(text.strip().lower().split())
    if words in OFF_WORDS:
        return None
    fields = text.split()
    expression = " ".join(fields) if len(fields) == 5 else _expression(words)
    return _parse_cron(text.strip(), expression)


def _expression(words: str) -> str:
    if words.startswith("@") and words[1:] in WORDS:
        return WORDS[words[1:]]
    match = _AT.fullmatch(words)
    if match:
        return _word_at(match.group("word"), match.group("at"))
    match = _EVERY.fullmatch(words)
    if match:
        count = int(match.group("count"))
        if match.group("unit").startswith("m"):
            if count < 1 or 60 % count:
                raise ScheduleError("every N minutes with N dividing 60 (1, 5, 10, 15, 30…)")
            return f"*/{count} * * * *"
        if count < 1 or 24 % count:
            raise ScheduleError("every N hours with N dividing 24 (1, 2, 3, 4, 6, 8, 12)")
        return f"0 */{count} * * *"
    if len(words.split()) == 5:
        return words
    raise ScheduleError(f"a schedule like {EXAMPLES}")


def _word_at(word: str, at: str | None) -> str:
    base = WORDS[word].split()
    if at is None:
        return " ".join(base)
    if word == "hourly":
        mark = _MINUTE_MARK.fullmatch(at)
        if not mark or int(mark.group("minute")) > 59:
            raise ScheduleError('"hourly at :MM", like "hourly at :15"')
        base[0] = str(int(mark.group("minute")))
        return " ".join(base)
    clock = _CLOCK.fullmatch(at)
    if not clock or int(clock.group("hour")) > 23 or int(clock.group("minute")) > 59:
        raise ScheduleError(f'"{word} at HH:MM" with a 24-hour time, like "{word} at 02:30"')
    base[0], base[1] = str(int(clock.group("minute"))), str(int(clock.group("hour")))
    return " ".join(base)


def _parse_cron(text: str, expression: str) -> Cron:
    parts = expression.split()
    sets: list[frozenset[int]] = []
    for index, part in enumerate(parts):
        sets.append(frozenset(_parse_field(part, index)))
    try:
        next(CronSim(" ".join(parts), datetime(2000, 1, 1)))
    except (CronSimError, StopIteration) as err:  # e.g. "0 0 31 2 *" never happens
        raise ScheduleError(f"a cron expression that ever runs ({err})") from None
    return Cron(
        text=text,
        expression=" ".join(parts),
        minutes=sets[0],
        hours=sets[1],
        days=sets[2],
        months=sets[3],
        weekdays=frozenset(0 if day == 7 else day for day in sets[4]),
        days_restricted=parts[2] != "*",
        weekdays_restricted=parts[4] != "*",
    )


def _value(text: str, index: int) -> int:
    names = _MONTHS if index == 3 else _DAYS if index == 4 else None
    if names is not None and text.lower() in names:
        return names.index(text.lower()) + (1 if index == 3 else 0)
    low, high = _RANGES[index]
    if not text.isdigit() or not low <= int(text) <= high:
        raise ScheduleError(
            f"a {FIELD_NAMES[index]} from {low} to {high} in field {index + 1} of the cron "
            f'expression; found "{text}"'
        )
    return int(text)


def _parse_field(part: str, index: int) -> set[int]:
    low, high = _RANGES[index]
    values: set[int] = set()
    for term in part.split(","):
        body, slash, step_text = term.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ScheduleError(
                    f'a step like */15 in the {FIELD_NAMES[index]} field; found "{term}"'
                )
            step = int(step_text)
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            start, end = _value(first, index), _value(last, index)
            if start > end:
                raise ScheduleError(
                    f'a range from low to high in the {FIELD_NAMES[index]} field; found "{body}"'
                )
        else:
            start = _value(body, index)
            end = high if slash else start
        values.update(range(start, end + 1, step))
    return values
