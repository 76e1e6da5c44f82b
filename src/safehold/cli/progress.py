"""Progress display on stderr with rich; silent when quiet or not on a terminal."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from safehold.app.inspect import human_bytes
from safehold.cli.context import CliState
from safehold.repo.progress import Progress as Report
from safehold.repo.progress import ProgressCallback


class _Throttle:
    def __init__(self, interval: float = 0.1) -> None:
        self._interval = interval
        self._last = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            return True
        return False


@contextmanager
def backup_progress(state: CliState) -> Iterator[ProgressCallback | None]:
    if not state.show_progress:
        yield None
        return
    throttle = _Throttle()
    started = time.monotonic()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
        console=state.err, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("scanning", total=None)

        def update(report: Report) -> None:
            if not throttle.due():
                return
            rate = report.done / max(time.monotonic() - started, 1e-6)
            progress.update(
                task,
                description=(
                    f"{report.files} files, {human_bytes(report.done)} read "
                    f"({human_bytes(rate)}/s) … {report.current[-60:]}"
                ),
            )

        yield update


@contextmanager
def restore_progress(state: CliState) -> Iterator[ProgressCallback | None]:
    if not state.show_progress:
        yield None
        return
    throttle = _Throttle()
    with Progress(
        TextColumn("restoring"), BarColumn(), TextColumn("{task.description}"),
        TimeElapsedColumn(), console=state.err, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("", total=None)

        def update(report: Report) -> None:
            if not throttle.due():
                return
            progress.update(
                task,
                total=report.total,
                completed=report.done,
                description=f"{report.files} files, {human_bytes(report.done)}",
            )

        yield update


@contextmanager
def step_progress(state: CliState) -> Iterator[ProgressCallback | None]:
    """For check, prune and copy: one bar per phase, `done` of `total` items."""
    if not state.show_progress:
        yield None
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=state.err, transient=True,
    ) as progress:  # fmt: skip
        tasks: dict[str, TaskID] = {}

        def update(report: Report) -> None:
            if report.phase not in tasks:
                tasks[report.phase] = progress.add_task(report.phase, total=report.total)
            progress.update(tasks[report.phase], completed=report.done, total=report.total)

        yield update
