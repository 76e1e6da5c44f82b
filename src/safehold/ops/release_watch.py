"""`safehold release watch`: the minutes after a deploy. Poll the plan's `[[release.signals]]`
and alert through the alert channels when one goes bad, naming `safehold rollback` as the fix.

A signal is bad after `failures` bad readings in a row (default 2), so one slow answer does
not page anyone; the first bad signal ends the watch, since the decision is now a human's.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from safehold.alerts.notify import Alert, Notifier
from safehold.app.releases import KIND, find_release, release_database
from safehold.plan.models import Plan
from safehold.plan.release import CommandSignal, HTTPSignal, Signal, SQLSignal
from safehold.redaction import redact
from safehold.repo.gotypes import format_time
from safehold.repo.repository import Repository
from safehold.sources.dbquery import CheckQueryError, Database
from safehold.sources.schema_reader import database_url


@dataclass(frozen=True)
class Reading:
    signal: str
    good: bool
    detail: str
    at: datetime


@dataclass
class WatchResult:
    release: str
    readings: list[Reading] = field(default_factory=list)
    bad: Reading | None = None
    alerted_to: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "result": "bad" if self.bad else "good",
            "bad_signal": self.bad.signal if self.bad else None,
            "detail": self.bad.detail if self.bad else None,
            "alerted_to": self.alerted_to,
            "readings": [
                {"signal": r.signal, "good": r.good, "detail": r.detail, "at": r.at.isoformat()}
                for r in self.readings
            ],
        }


Clock = Callable[[], datetime]
Observer = Callable[[Reading], None]


def signal_name(signal: Signal, index: int) -> str:
    if signal.name:
        return signal.name
    label = (
        signal.url
        if isinstance(signal, HTTPSignal)
        else getattr(signal, "query", None)
        or (signal.command if isinstance(signal, CommandSignal) else "")
    )
    return f"signal {index + 1} ({signal.type}: {redact(str(label))[:40]})"


def read_signal(plan: Plan, signal: Signal, name: str, clock: Clock) -> Reading:
    """One reading of one signal."""
    if isinstance(signal, HTTPSignal):
        good, detail = _http(signal)
    elif isinstance(signal, SQLSignal):
        good, detail = _sql(plan, signal)
    else:
        good, detail = _command(signal)
    return Reading(name, good, redact(detail), clock())


def watch_release(
    repo: Repository,
    plan: Plan,
    release_id: str,
    notifier: Notifier,
    *,
    duration: timedelta,
    every: timedelta,
    failures: int = 2,
    clock: Clock,
    sleep: Callable[[float], None] = time.sleep,
    observe: Observer = lambda reading: None,
) -> WatchResult:
    """Poll every signal each `every` for `duration`; alert and stop at the first bad one."""
    release = find_release(repo, release_id)
    signals = list(plan.release.signals) if plan.release else []
    result = WatchResult(release.id)
    deadline = clock() + duration
    streak: dict[str, int] = {}
    while True:
        for index, signal in enumerate(signals):
            name = signal_name(signal, index)
            reading = read_signal(plan, signal, name, clock)
            result.readings.append(reading)
            observe(reading)
            streak[name] = 0 if reading.good else streak.get(name, 0) + 1
            if streak[name] >= failures:
                result.bad = reading
                result.alerted_to = _alert(notifier, plan, release.id, reading)
                _record(repo, result)
                return result
        if clock() + every > deadline:
            break
        sleep(every.total_seconds())
    _record(repo, result)
    return result


def _alert(notifier: Notifier, plan: Plan, release_id: str, reading: Reading) -> list[str]:
    alert = Alert(
        key=f"release:{release_id}",
        severity="error",
        title=f"release {release_id}: {reading.signal} went bad",
        what=f"After the deploy of {release_id}, {reading.signal} is bad: {reading.detail}.",
        why="a signal of [[release.signals]] left its limits in the watch after the deploy",
        fix=f"safehold rollback --dry-run (then safehold rollback --yes) on {plan.name_prefix}",
    )
    return notifier.send(alert).delivered_to


def _record(repo: Repository, result: WatchResult) -> None:
    document = {
        "type": "watch",
        "release": result.release,
        "when": format_time(repo.clock()),
        "result": "bad" if result.bad else "good",
        "signal": result.bad.signal if result.bad else None,
        "detail": result.bad.detail if result.bad else None,
        "readings": len(result.readings),
    }
    with repo.locked(exclusive=False):
        repo.save_record(KIND, document)


def _http(signal: HTTPSignal) -> tuple[bool, str]:
    request = urllib.request.Request(signal.url, headers={"User-Agent": "safehold-release-watch"})
    try:
        with urllib.request.urlopen(request, timeout=signal.timeout.total_seconds()) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as error:
        status = int(error.code)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return False, f"no answer from {signal.url}: {reason}"
    if status != signal.status:
        return False, f"{signal.url} answered {status}, expected {signal.status}"
    return True, f"{signal.url} answered {status}"


def _within(signal: SQLSignal | CommandSignal, value: float) -> tuple[bool, str]:
    if signal.max is not None and value > signal.max:
        return False, f"{value:g} is above the limit {signal.max:g}"
    if signal.min is not None and value < signal.min:
        return False, f"{value:g} is below the limit {signal.min:g}"
    return True, f"{value:g} is within the limits"


def _sql(plan: Plan, signal: SQLSignal) -> tuple[bool, str]:
    database = _signal_database(plan, signal)
    try:
        rows = database.query(signal.query)
    except CheckQueryError as error:
        return False, error.message
    try:
        value = float(rows[0][0])
    except (IndexError, TypeError, ValueError):
        return False, "the query returned no number"
    return _within(signal, value)


def _signal_database(plan: Plan, signal: SQLSignal) -> Database:
    database = release_database(plan)
    if signal.source is None or signal.source == database.label.split("/")[0]:
        return database
    source = next(s for s in plan.sources if s.name == signal.source)
    url = getattr(source, "url", None)
    if url is None:
        return Database("sqlite", str(getattr(source, "path", "")), source.name)
    kind = "postgres" if source.type == "postgres" else "mysql"
    dbnames = getattr(source, "databases", None) or [None]
    return Database(kind, database_url(str(url), dbnames[0]), source.name)


def _command(signal: CommandSignal) -> tuple[bool, str]:
    try:
        completed = subprocess.run(
            signal.command, shell=True, capture_output=True, text=True, errors="replace",
            timeout=signal.timeout.total_seconds(), check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return False, f"the command took longer than {signal.timeout}"
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout).strip().splitlines()
        return False, f"the command exited {completed.returncode}" + (
            f": {tail[-1]}" if tail else ""
        )
    if signal.min is None and signal.max is None:
        return True, "the command exited 0"
    lines = completed.stdout.strip().splitlines()
    try:
        value = float(lines[-1].split()[0])
    except (IndexError, ValueError):
        return False, "the command printed no number on its last line"
    return _within(signal, value)
