"""The one progress type: what a long operation reports while it works.

Every long operation — backup and restore (fs/), copy (app/), check and prune (repo/) — calls
an optional `ProgressCallback` with a `Progress`; the CLI (cli/progress.py) turns the reports
into a rich display. It lives in repo/, the lowest layer with a long operation, so every
producer and the display sit above it. A callback must be cheap and must not raise: it runs on
the worker that made the progress (the archiver's walk, the restorer's writers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Progress:
    """How far one phase of an operation is.

    `phase` names the step ("backup", "restore", "snapshots", "read data", "repack", "delete",
    "copy blobs", "finishing" …); `done` and `total` count `unit`s (items, or bytes for backup
    and restore); `total` is None while unknown. `files` counts the files handled so far (of
    `files_total` when known) and `current` is the path being worked on, for the phases that
    walk a tree; `source` names the plan source being worked on, when there is one."""

    phase: str
    done: int
    total: int | None = None
    unit: Literal["items", "bytes"] = "items"
    files: int = 0
    current: str = ""
    files_total: int | None = None
    source: str = ""


ProgressCallback = Callable[[Progress], None]
