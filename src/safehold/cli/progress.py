"""Progress of long commands, in the three forms a user meets it.

- on a terminal: a live rich display on stderr (phase or source, bar, bytes or items of the
  total, files, rate, ETA, the current path), gone when the command ends;
- not on a terminal (cron, systemd, CI logs): one plain line on stderr every
  `--progress-interval` seconds, so a long job's log shows it is alive;
- with `--json`: the same status every interval as one JSON object per line on stdout
  (`{"message_type": "status", ...}`, as restic's `--json`), the summary following last.

`-q` turns all three off. Core code only calls the `ProgressCallback` it is given; the reports
may come from several threads (the backup's readers), so the tracker takes a lock.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from safehold.app.inspect import human_bytes
from safehold.cli.context import CliState
from safehold.redaction import redact
from safehold.repo.progress import Progress as Report
from safehold.repo.progress import ProgressCallback

if TYPE_CHECKING:
    from rich.progress import TaskID

Kind = Literal["backup", "restore", "steps"]
_TTY_REFRESH_S = 0.1
_RATE_WINDOW_S = 2.0  # below this much time in a phase, the rate is not shown yet


@dataclass(frozen=True)
class Status:
    """What the displays show: the newest report, with rate and ETA worked out."""

    report: Report
    elapsed: float  # since the command started
    phase_elapsed: float  # since the report's phase started
    rate: float | None  # units per second in this phase
    eta: float | None  # seconds left in this phase

    @property
    def percent(self) -> float | None:
        total = self.report.total
        if not total:
            return None
        return min(1.0, self.report.done / total)


class Tracker:
    """Keeps the newest report (from any thread) and works out rate and ETA per phase."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._phase_started = self._started
        self._report: Report | None = None
        self._phase_key: tuple[str, str] | None = None
        self._phase_base = 0  # `done` when the phase started (rates count from there)

    def update(self, report: Report) -> None:
        with self._lock:
            key = (report.phase, report.source)
            if key != self._phase_key:
                self._phase_key = key
                self._phase_started = self._clock()
                self._phase_base = report.done if report.unit == "bytes" else 0
            self._report = report

    def current(self) -> Status | None:
        with self._lock:
            report = self._report
            if report is None:
                return None
            now = self._clock()
            phase_elapsed = now - self._phase_started
            rate = eta = None
            if phase_elapsed >= _RATE_WINDOW_S or (report.unit == "items" and phase_elapsed > 0):
                rate = max(0, report.done - self._phase_base) / phase_elapsed
            if rate and report.total is not None:
                eta = max(0.0, (report.total - report.done) / rate)
            return Status(report, now - self._started, phase_elapsed, rate, eta)


# ----- formatting ------------------------------------------------------------------------


def format_seconds(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _amount(report: Report) -> str:
    if report.unit == "bytes":
        text = human_bytes(report.done)
        if report.total is not None:
            text += f" of {human_bytes(report.total)}"
        return text
    if report.total is None and not report.done:
        return "working"  # a step that only says it started (a drill's checks)
    return f"{report.done:,}" + (f" of {report.total:,}" if report.total is not None else "")


def _files(report: Report) -> str:
    if report.unit != "bytes" or (not report.files and report.files_total is None):
        return ""
    if report.files_total is not None:
        return f"{report.files:,} of {report.files_total:,} files"
    return f"{report.files:,} files"


def _rate(state: Status) -> str:
    if state.rate is None:
        return ""
    if state.report.unit == "bytes":
        return f"{human_bytes(state.rate)}/s"
    return f"{state.rate:,.1f}/s"


def _title(report: Report) -> str:
    return f"{report.phase} {report.source}" if report.source else report.phase


def status_line(state: Status) -> str:
    """`[0:10] backup db: 1.2 GiB of 2.4 GiB (50%), 120 of 240 files, 60 MiB/s, ETA 0:20, PATH`"""
    report = state.report
    parts = [_amount(report) + (f" ({state.percent:.0%})" if state.percent is not None else "")]
    parts += [text for text in (_files(report), _rate(state)) if text]
    if state.eta is not None:
        parts.append(f"ETA {format_seconds(state.eta)}")
    if report.current and report.current != report.source:
        parts.append(report.current)
    return f"[{format_seconds(state.elapsed)}] {_title(report)}: " + ", ".join(parts)


def status_message(state: Status, kind: Kind) -> dict[str, Any]:
    """One `--json` status message, with restic's field names where restic has the field."""
    report = state.report
    message: dict[str, Any] = {
        "message_type": "status",
        "phase": report.phase,
        "seconds_elapsed": round(state.elapsed, 3),
    }
    if report.source:
        message["source"] = report.source
    if state.eta is not None:
        message["seconds_remaining"] = round(state.eta)
    if state.percent is not None:
        message["percent_done"] = round(state.percent, 4)
    if report.unit == "bytes":
        done_key = "bytes_restored" if kind == "restore" else "bytes_done"
        files_key = "files_restored" if kind == "restore" else "files_done"
        message["total_files"] = report.files_total
        message[files_key] = report.files
        message["total_bytes"] = report.total
        message[done_key] = report.done
    else:
        message["total_items"] = report.total
        message["items_done"] = report.done
    if report.current:
        message["current_files"] = [report.current]
    return message


# ----- the displays ----------------------------------------------------------------------


class _Ticker:
    """Calls `emit` every `interval` seconds on a thread of its own, also when no report
    came in meanwhile: a step that reports nothing (pg_restore at work) still shows life."""

    def __init__(self, interval: float, emit: Callable[[], None]) -> None:
        self._interval = interval
        self._emit = emit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self) -> _Ticker:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._emit()
            except (OSError, ValueError):  # a closed pipe: stop showing, the command goes on
                return


def _emit_lines(state: CliState, tracker: Tracker) -> Callable[[], None]:
    def emit() -> None:
        current = tracker.current()
        if current is not None:
            state.err.print(redact(status_line(current)), markup=False, highlight=False)

    return emit


def _emit_json(tracker: Tracker, kind: Kind, lock: threading.Lock) -> Callable[[], None]:
    def emit() -> None:
        current = tracker.current()
        if current is None:
            return
        line = redact(json.dumps(status_message(current, kind), ensure_ascii=False))
        with lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    return emit


@contextmanager
def _terminal(state: CliState, tracker: Tracker, kind: Kind) -> Iterator[ProgressCallback]:
    # rich.progress (~20 ms of imports) loads only when a terminal shows the bars
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"), BarColumn(bar_width=24),
        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
    )  # fmt: skip
    with Progress(*columns, console=state.err, transient=True) as bars:
        tasks: dict[tuple[str, str], TaskID] = {}
        last = [0.0]
        lock = threading.Lock()

        def show(report: Report) -> None:
            tracker.update(report)
            now = time.monotonic()
            with lock:
                key = (report.phase, report.source)
                if key in tasks and now - last[0] < _TTY_REFRESH_S:
                    return
                last[0] = now
                current = tracker.current()
                assert current is not None
                if key not in tasks:
                    tasks[key] = bars.add_task(_title(report), total=report.total, detail="")
                detail = status_line(current).split(": ", 1)[1]
                bars.update(tasks[key], total=report.total, completed=report.done,
                            detail=redact(detail[-110:]))  # fmt: skip

        yield show


@contextmanager
def show_progress(
    state: CliState, kind: Kind = "steps", *, as_json: bool = False
) -> Iterator[ProgressCallback | None]:
    """The callback to give a long operation, or None under -q. See the module docstring."""
    if state.quiet:
        yield None
        return
    tracker = Tracker()
    if as_json:
        with _Ticker(state.progress_interval, _emit_json(tracker, kind, threading.Lock())):
            yield tracker.update
        return
    if state.err.is_terminal:
        with _terminal(state, tracker, kind) as show:
            yield show
        return
    with _Ticker(state.progress_interval, _emit_lines(state, tracker)):
        yield tracker.update


def backup_progress(
    state: CliState, as_json: bool = False
) -> AbstractContextManager[ProgressCallback | None]:
    return show_progress(state, "backup", as_json=as_json)


def restore_progress(
    state: CliState, as_json: bool = False
) -> AbstractContextManager[ProgressCallback | None]:
    return show_progress(state, "restore", as_json=as_json)


def step_progress(
    state: CliState, as_json: bool = False
) -> AbstractContextManager[ProgressCallback | None]:
    """For check, prune, copy and drill: one bar per phase."""
    return show_progress(state, "steps", as_json=as_json)
