"""The asynchronous archive: `wal-push --async` spools, one long-running pusher uploads.

`spool_file` copies a segment into the spool folder (temp name, fsync, rename, fsync of the
folder) and returns: PostgreSQL may then recycle its own copy, so the spool is as durable as
the database server's own disk, not yet off-site. The pusher (`Pusher`) holds the spool's
lock file for as long as it runs, opens the repository ONCE (one key derivation), stores the
spooled files in batches (one snapshot per batch) and removes each spooled file only after
its batch snapshot is written. A kill at any moment loses nothing: a half-copied spool file
keeps its temp name (PostgreSQL retries the segment), and a file whose batch was written but
not yet removed is found already stored, with the same content, on the next round.

The spool refuses new segments (non-zero exit, PostgreSQL keeps them and retries) once it
holds `max_files`: a pusher that does not run never lets the spool silently grow.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from safehold.errors import SafeholdError
from safehold.pitr.errors import PitrError, SpoolFullError, WalConflictError
from safehold.pitr.store import PushResult, WalArchive, WalFile, describe_file, push_files
from safehold.pitr.walnames import parse_wal_name, require_wal_name
from safehold.repo.repository import Repository

LOCK_FILE = "pusher.lock"
LOG_FILE = "pusher.log"
_TMP_PREFIX = ".tmp-"
DEFAULT_MAX_FILES = 256
DEFAULT_BATCH = 64


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_content(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as left, open(b, "rb") as right:
        while True:
            one, two = left.read(1024 * 1024), right.read(1024 * 1024)
            if one != two:
                return False
            if not one:
                return True


def spooled_names(spool: Path) -> list[str]:
    """The WAL files waiting in the spool, oldest name first."""
    try:
        names = os.listdir(spool)
    except FileNotFoundError:
        return []
    return sorted(name for name in names if parse_wal_name(name) is not None)


def spool_file(spool: Path, source: Path, max_files: int = DEFAULT_MAX_FILES) -> str:
    """Put `source` into the spool durably. Returns "spooled" or "already" (the same file is
    already waiting); raises WalConflictError for other content, SpoolFullError when full."""
    name = source.name
    require_wal_name(name)
    if not spool.is_dir():
        raise PitrError(
            f"the WAL spool folder {spool} does not exist",
            hint=f"create it, owned by the account PostgreSQL runs as: mkdir -p {spool}",
        )
    target = spool / name
    if target.exists():
        if _same_content(source, target):
            return "already"
        raise WalConflictError(f"{name} is already in the spool {spool} with OTHER content")
    if len(spooled_names(spool)) >= max_files:
        raise SpoolFullError(f"the WAL spool {spool} already holds {max_files} files")
    tmp = spool / f"{_TMP_PREFIX}{name}-{os.getpid()}"
    try:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
            dst.flush()
            os.fsync(dst.fileno())
        os.rename(tmp, target)
        _fsync_dir(spool)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise PitrError(f"cannot spool {source} into {spool}: {err.strerror}") from None
    return "spooled"


@contextlib.contextmanager
def pusher_lock(spool: Path) -> Iterator[IO[str] | None]:
    """The spool's lock, held while a pusher runs; yields None when another pusher holds it."""
    handle = open(spool / LOCK_FILE, "a+")  # noqa: SIM115 - closed below
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield handle
    finally:
        handle.close()


def pusher_running(spool: Path) -> bool:
    """Whether a pusher holds the spool's lock right now."""
    if not (spool / LOCK_FILE).exists():
        return False
    with pusher_lock(spool) as held:
        return held is None


@dataclass
class PusherRound:
    pushed: list[str]
    already: list[str]


class Pusher:
    """Uploads the spool with one opened repository (see the module docstring)."""

    def __init__(
        self,
        spool: Path,
        open_repo: Callable[[], Repository],
        *,
        batch: int = DEFAULT_BATCH,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.spool = spool
        self.open_repo = open_repo
        self.batch = batch
        self.log = log
        self._repo: Repository | None = None
        self._archive: WalArchive | None = None

    def _ready(self) -> tuple[Repository, WalArchive]:
        if self._repo is None:
            self._repo = self.open_repo()
        if self._archive is None:
            self._archive = WalArchive.load(self._repo)
        return self._repo, self._archive

    def run_once(self) -> PusherRound:
        """Push what the spool holds now, in batches; returns what was done."""
        done = PusherRound([], [])
        names = spooled_names(self.spool)
        while names:
            chunk, names = names[: self.batch], names[self.batch :]
            files: list[WalFile] = [describe_file(self.spool / name) for name in chunk]
            repo, archive = self._ready()
            try:
                result = push_files(repo, files, archive)
            except WalConflictError:
                self._archive = None  # another writer may have stored it: look again once
                repo, archive = self._ready()
                result = push_files(repo, files, archive)
            self._remove(result)
            done.pushed += result.stored
            done.already += result.already
            if result.stored:
                self.log(f"stored {len(result.stored)} WAL file(s): {result.stored[0]} .. "
                         f"{result.stored[-1]}")  # fmt: skip
        return done

    def _remove(self, result: PushResult) -> None:
        for name in [*result.stored, *result.already]:
            with contextlib.suppress(FileNotFoundError):
                (self.spool / name).unlink()
        _fsync_dir(self.spool)

    def run(self, idle_exit: float | None = None, poll: float = 0.5) -> None:
        """Push until stopped; with `idle_exit`, return after that many seconds of an empty
        spool. Repository errors are logged and retried (the spool keeps the files)."""
        idle_since = time.monotonic()
        delay = poll
        while True:
            try:
                pushed = self.run_once()
                delay = poll
            except SafeholdError as err:
                self.log(f"error: {err.message}")
                self._repo = None
                self._archive = None
                delay = min(max(delay * 2, 1.0), 30.0)
                pushed = PusherRound([], [])
            if pushed.pushed or pushed.already or spooled_names(self.spool):
                idle_since = time.monotonic()
            elif idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                return
            time.sleep(delay)


def clean_stale_temp_files(spool: Path, older_than: float = 3600.0) -> int:
    """Remove temp files of spool copies that were killed halfway (PostgreSQL retried them)."""
    removed = 0
    cutoff = time.time() - older_than
    for entry in os.scandir(spool):
        if entry.name.startswith(_TMP_PREFIX) and entry.stat().st_mtime < cutoff:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed += 1
    return removed
