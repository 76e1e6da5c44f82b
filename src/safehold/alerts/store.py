"""Local operations state: small JSON documents in one folder (the state folder), each
changed under an exclusive lock and replaced atomically, so a watch, a job and the daemon
running at the same moment never lose each other's updates or leave half a file.

Nothing here is the truth about backups — the repositories are. This is memory: which
alerts were sent and delivered, which problems are open (for rate limiting and "resolved"
messages), how each job's last run ended, what the schedule installed."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from safehold.errors import SafeholdError

Document = dict[str, Any]


class StateError(SafeholdError):
    default_hint = (
        "check that the state folder is writable by the user running safehold "
        "(SAFEHOLD_STATE_DIR, default <plan folder>/.safehold)"
    )


class StateStore:
    """JSON documents by name (`alerts`, `jobs`, …) under `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def read(self, name: str) -> Document:
        """The document, or {} when it does not exist or cannot be parsed (memory only:
        a damaged file must never stop a backup or an alert)."""
        try:
            data = json.loads(self.path(name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def update(self, name: str, change: Callable[[Document], None]) -> Document:
        """Read, change in place and write back `name` under an exclusive lock."""
        with self._locked(name):
            document = self.read(name)
            change(document)
            self._write(name, document)
            return document

    def write(self, name: str, document: Document) -> None:
        with self._locked(name):
            self._write(name, document)

    def delete(self, name: str) -> None:
        with self._locked(name), contextlib.suppress(FileNotFoundError):
            self.path(name).unlink()

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle = open(self.folder / f".{name}.lock", "a+")  # noqa: SIM115
        except OSError as err:
            raise StateError(f"state folder {self.folder}: {err.strerror}") from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _write(self, name: str, document: Document) -> None:
        target = self.path(name)
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{name}.", dir=self.folder)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(document, out, indent=2, sort_keys=True, default=_default)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        except OSError as err:
            raise StateError(f"state folder {self.folder}: {err.strerror}") from None


def _default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__}")


def parse_time(value: object) -> datetime | None:
    """A stored ISO time, or None."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.astimezone()
