"""The asynchronous archive: `wal-push --async` spools, one long-running pusher uploads.

`spool_file` copies a segment into the spool folder (temp name, fsync, rename, fsync of the
folder) and returns: PostgreSQL may then recycle its own copy, so the spool is as durable as
the database server's own disk, not yet off-site. The pusher (`Pusher`) holds the spool's
lock file for as long as it runs, opens the repository ONCE (one key derivation), stores the
spooled files in batches (one snapshot per batch) and removes each spooled file only after
its batch snapshot is written. A kill at any moment loses nothing: a half-copied spool file
keeps its temp name (PostgreSQL retries the segment), and a file whose batch was written but
not yet removed is found already stored, with the same content, on the next round.

Read-ahead (as pgBackRest's asynchronous archiving does): a pusher given the server's pg_wal
folder (`wal_dir`, which `wal-push --async` passes when it starts one) also stores every
segment the server marked ready, straight from pg_wal, up to `read_ahead` per batch, and
records each in the spool's `stored/` folder after its batch snapshot is written. The
archive_command for a recorded segment then succeeds at once, with the segment already in
the repository (see spoolfile.acknowledge): no spool copy, no second read.

The spool refuses new segments (non-zero exit, PostgreSQL keeps them and retries) once it
holds `max_files`: a pusher that does not run never lets the spool silently grow.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from safehold.errors import SafeholdError
from safehold.pitr.errors import WalConflictError
from safehold.pitr.spoolfile import (
    ACK_DIR,
    forget_stored,
    fsync_dir,
    ready_names,
    record_conflict,
    record_stored,
    spooled_names,
)
from safehold.pitr.store import PushResult, WalArchive, WalFile, describe_file, push_files
from safehold.repo.repository import Repository

DEFAULT_BATCH = 64
# segments per read-ahead batch (each is acknowledged after its batch; held in memory: 128 MiB)
DEFAULT_READ_AHEAD = 8


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    return info.st_size, info.st_ino, info.st_mtime_ns


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
        wal_dir: Path | None = None,
        read_ahead: int = DEFAULT_READ_AHEAD,
    ) -> None:
        self.spool = spool
        self.open_repo = open_repo
        self.batch = batch
        self.log = log
        self.wal_dir = wal_dir
        self.read_ahead = read_ahead
        self._skip: set[str] = set()  # ready files the read-ahead leaves to the spool path
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
                try:
                    result = push_files(repo, files, archive)
                except WalConflictError as err:
                    record_conflict(self.spool, err.message)
                    raise
            self._remove(result)
            done.pushed += result.stored
            done.already += result.already
            if result.stored:
                self.log(f"stored {len(result.stored)} WAL file(s): {result.stored[0]} .. "
                         f"{result.stored[-1]}")  # fmt: skip
        if self.wal_dir is not None:
            self._read_ahead(self.wal_dir, done)
        return done

    def _read_ahead(self, wal_dir: Path, done: PusherRound) -> None:
        """Store the server's ready segments straight from pg_wal (see the module docstring)."""
        forget_stored(self.spool, wal_dir)
        recorded = set(spooled_names(self.spool))
        with contextlib.suppress(FileNotFoundError):
            recorded.update(os.listdir(self.spool / ACK_DIR))
        todo = [n for n in ready_names(wal_dir) if n not in recorded and n not in self._skip]
        while todo:
            chunk, todo = todo[: self.read_ahead], todo[self.read_ahead :]
            files: list[tuple[WalFile, os.stat_result]] = []
            for name in chunk:
                path = wal_dir / name
                try:
                    info = path.stat()  # before it is read: the record matches what was read
                    wal = describe_file(path, keep=True)
                    after = path.stat()
                except (OSError, SafeholdError):
                    continue  # archived and removed meanwhile, or not complete: the command says
                # Once archived, PostgreSQL may recycle a segment: rename it, then overwrite it.
                # The same inode, unchanged, under the same name after the read: nothing was
                # overwritten while it was read, and it is stored from these bytes only.
                if _identity(info) == _identity(after):
                    files.append((wal, info))
            repo, archive = self._ready()
            try:
                result = push_files(repo, [wal for wal, _ in files], archive)
            except WalConflictError as err:
                # the archive_command of that file finds it via the spool path, and fails loudly
                self._skip.update(wal.name for wal, _ in files)
                self.log(f"read-ahead: {err.message}; left to the archive_command")
                return
            ok = set(result.stored) | set(result.already)
            record_stored(
                self.spool, [(wal.path, wal.sha256, info) for wal, info in files if wal.name in ok]
            )
            done.pushed += result.stored
            done.already += result.already
            if result.stored:
                self.log(f"read ahead {len(result.stored)} WAL file(s): {result.stored[0]} .. "
                         f"{result.stored[-1]}")  # fmt: skip

    def _remove(self, result: PushResult) -> None:
        for name in [*result.stored, *result.already]:
            with contextlib.suppress(FileNotFoundError):
                (self.spool / name).unlink()
        fsync_dir(self.spool)

    def run(self, idle_exit: float | None = None, poll: float | None = None) -> None:
        """Push until stopped; with `idle_exit`, return after that many seconds of an empty
        spool. Repository errors are logged and retried (the spool keeps the files)."""
        idle_since = time.monotonic()
        poll = poll if poll is not None else (0.1 if self.wal_dir is not None else 0.5)
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
            if pushed.pushed or pushed.already:
                idle_since = time.monotonic()
                continue  # busy: look again at once
            if spooled_names(self.spool):
                idle_since = time.monotonic()
            elif idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                return
            time.sleep(delay)
