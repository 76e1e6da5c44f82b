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
    TextColumn,
    TimeElapsedColumn,
)

from safehold.app.inspect import human_bytes
from safehold.cli.context import CliState
from safehold.fs.archiver import BackupStats
from safehold.fs.restorer import RestoreStats


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
def backup_progress(state: CliState) -> Iterator[object]:
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

        def update(stats: BackupStats, current: str) -> None:
            if not throttle.due():
                return
            files = stats.files_new + stats.files_changed + stats.files_unmodified
            rate = stats.bytes_read / max(time.monotonic() - started, 1e-6)
            progress.update(
                task,
                description=(
                    f"{files} files, {human_bytes(stats.bytes_read)} read "
                    f"({human_bytes(rate)}/s) … {current[-60:]}"
                ),
            )

        yield update


@contextmanager
def restore_progress(state: CliState) -> Iterator[object]:
    if not state.show_progress:
        yield None
        return
    throttle = _Throttle()
    with Progress(
        TextColumn("restoring"), BarColumn(), TextColumn("{task.description}"),
        TimeElapsedColumn(), console=state.err, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("", total=None)

        def update(stats: RestoreStats, current: str) -> None:
            if not throttle.due():
                return
            progress.update(
                task,
                total=stats.bytes_total or None,
                completed=stats.bytes_written,
                description=f"{stats.files} files, {human_bytes(stats.bytes_written)}",
            )

        yield update


@contextmanager
def step_progress(state: CliState) -> Iterator[object]:
    """For check and prune: (phase, done, total) callbacks."""
    if not state.show_progress:
        yield None
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=state.err, transient=True,
    ) as progress:  # fmt: skip
        tasks: dict[str, object] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total)
            progress.update(tasks[phase], completed=done, total=total)  # type: ignore[arg-type]

        yield update
